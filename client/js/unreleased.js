// Versions sensors report that nobody uploaded (GET /software/unreleased, and live in every
// `summary` message): they are never stored on a sensor, so without this panel they would be
// out of sight.

import { getJSON, keptWhileStale } from "./api.js";
import { count, dateTime, h, relativeTime } from "./format.js";

function since(iso) {
  const at = new Date(iso);
  const today = new Date().toDateString() === at.toDateString();
  return today ? at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : dateTime(iso);
}

export class Unreleased {
  constructor({ list }) {
    this.list = list;
  }

  async load() {
    let body;
    try {
      body = await getJSON("/software/unreleased");
    } catch (error) {
      if (keptWhileStale(error) && this.list.children.length) return;
      this.list.replaceChildren(h("li", { class: "error" }, `Could not load unreleased versions: ${error.message}`));
      this.list.hidden = false;
      return;
    }
    this.render(body.items);
  }

  render(items) {
    this.list.hidden = !items.length;
    this.list.replaceChildren(...items.map((item) => this.item(item)));
  }

  item(item) {
    return h(
      "li",
      { dataset: { version: item.version } },
      h("strong", {}, item.version),
      ` reported by sensors since ${since(item.firstSeenAt)}, not uploaded `,
      h("span", { class: "hint" }, `(${count(item.reports)} reports, last `, relativeTime(item.lastSeenAt), ")"),
    );
  }
}
