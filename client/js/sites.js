// Sites and whether each is covered (GET /sites: maintained online/offline/never totals per
// site). A site with no sensor online is not covered: for a drone-detection fleet that is the
// first thing to see. Also offers the site names to the list's site filter.

import { getJSON, keptWhileStale } from "./api.js";
import { count, h } from "./format.js";
import { listHash } from "./router.js";

export class Sites {
  constructor({ list, options }) {
    this.list = list;
    this.options = options; // <datalist> of the site filter
  }

  async load() {
    let body;
    try {
      body = await getJSON("/sites");
    } catch (error) {
      if (keptWhileStale(error) && this.list.children.length) return;
      this.list.replaceChildren(h("li", { class: "error" }, `Could not load sites: ${error.message}`));
      return;
    }
    const { items } = body;
    const named = items.filter((item) => item.site !== null);
    this.options.replaceChildren(...named.map((item) => h("option", { value: item.site })));
    if (!items.length) {
      this.list.replaceChildren(h("li", { class: "empty" }, "No sites yet: sensors are added without one."));
      return;
    }
    this.list.replaceChildren(...items.map((item) => this.item(item)));
  }

  item(item) {
    const { covered } = item;
    // Sensors without a site are counted too, but cannot be picked by the site filter.
    const name = item.site === null ? h("em", {}, "no site") : h("a", { href: listHash(new URLSearchParams({ site: item.site })) }, item.site);
    return h(
      "li",
      { class: covered ? "covered" : "uncovered", dataset: { site: item.site ?? "" } },
      name,
      " ",
      h("span", { class: "badge " + (covered ? "online" : "offline") }, covered ? "covered" : "not covered"),
      h("span", { class: "hint" }, ` ${count(item.online)} online · ${count(item.offline)} offline · ${count(item.never)} never seen`),
    );
  }
}
