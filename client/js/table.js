// The sensor table: one page of GET /sensors, filters and paging kept in the URL, rows updated
// live from the WebSocket and highlighted briefly when they change.

import { getJSON } from "./api.js";
import { count, h, relativeTime } from "./format.js";

const DEFAULTS = { page: 1, limit: 50, status: "", version: "", q: "" };
const SEARCH_DELAY = 250; // ms of typing quiet before the search runs

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const state = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS)) {
    if (params.has(key)) state[key] = params.get(key);
  }
  state.page = Math.max(1, parseInt(state.page, 10) || 1);
  state.limit = parseInt(state.limit, 10) || DEFAULTS.limit;
  return state;
}

function writeHash(state) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) {
    if (value !== DEFAULTS[key] && value !== "") params.set(key, value);
  }
  const hash = params.toString();
  history.replaceState(null, "", hash ? `#${hash}` : location.pathname);
}

function badge(status) {
  const text = status === "never" ? "never seen" : status;
  return h("span", { class: `badge ${status}` }, text);
}

export class SensorTable {
  constructor({ table, form, pager, pageInfo, caption, onPage }) {
    this.body = table.tBodies[0];
    this.form = form;
    this.pager = pager;
    this.pageInfo = pageInfo;
    this.caption = caption;
    this.onPage = onPage; // called with the serials now on screen
    this.state = readHash();
    this.lastPage = 1;
    this.rows = new Map(); // serial → <tr>
    this.loading = null;
    this.bind();
  }

  bind() {
    const { elements } = this.form;
    for (const name of ["status", "version", "limit"]) {
      elements[name].value = String(this.state[name]);
    }
    elements.q.value = this.state.q;
    this.form.addEventListener("change", (event) => {
      if (event.target.name !== "q") this.filter();
    });
    let typing;
    elements.q.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => this.filter(), SEARCH_DELAY);
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.filter();
    });
    this.pager.addEventListener("click", (event) => {
      const go = event.target.closest("button")?.dataset.go;
      if (go) this.go(go);
    });
  }

  filter() {
    const { elements } = this.form;
    Object.assign(this.state, {
      q: elements.q.value.trim(),
      status: elements.status.value,
      version: elements.version.value,
      limit: parseInt(elements.limit.value, 10),
      page: 1,
    });
    this.load();
  }

  go(where) {
    const page = {
      first: 1,
      prev: this.state.page - 1,
      next: this.state.page + 1,
      last: this.lastPage,
    }[where];
    this.state.page = Math.min(Math.max(1, page), this.lastPage);
    this.load();
  }

  // Versions offered by the filter (from the fleet summary), keeping the current choice.
  setVersions(versions) {
    const select = this.form.elements.version;
    const current = this.state.version;
    const options = [h("option", { value: "" }, "any")];
    for (const version of versions) {
      if (version) options.push(h("option", { value: version }, version));
    }
    if (current && !versions.includes(current)) {
      options.push(h("option", { value: current }, current));
    }
    select.replaceChildren(...options);
    select.value = current;
  }

  // Reload the current page (after paging, filtering, a reconnect or a resync).
  async load() {
    writeHash(this.state);
    const request = (this.loading = getJSON("/sensors", this.state));
    let page;
    try {
      page = await request;
    } catch (error) {
      if (request === this.loading) this.showError(error);
      return;
    }
    if (request !== this.loading) return; // a newer load superseded this one
    this.render(page);
  }

  render(page) {
    const { items, total, limit, totalExact } = page;
    this.lastPage = Math.max(1, Math.ceil(total / limit));
    this.state.page = page.page ?? this.state.page;
    this.rows.clear();
    const rows = items.map((item) => this.row(item));
    if (!rows.length) {
      rows.push(h("tr", { class: "empty" }, h("td", { colspan: 5 }, "No sensors match.")));
    }
    this.body.replaceChildren(...rows);
    const about = totalExact === false ? "at least " : "";
    const text = `Page ${count(this.state.page)} of ${about}${count(this.lastPage)} · ${about}${count(total)} sensors`;
    this.pageInfo.textContent = text;
    this.caption.textContent = `Sensors, ${text}`;
    for (const button of this.pager.querySelectorAll("button")) {
      const back = button.dataset.go === "first" || button.dataset.go === "prev";
      button.disabled = back ? this.state.page <= 1 : this.state.page >= this.lastPage;
    }
    this.onPage(items.map((item) => item.serial));
  }

  row(item) {
    const tr = h("tr", { dataset: { serial: item.serial } });
    this.fill(tr, item);
    this.rows.set(item.serial, tr);
    return tr;
  }

  fill(tr, item) {
    tr.replaceChildren(
      h("th", { scope: "row", "data-label": "Serial" }, item.serial),
      h("td", { "data-label": "Status" }, badge(item.status)),
      h("td", { "data-label": "Version" }, item.version ?? "—"),
      h("td", { "data-label": "Last seen" }, relativeTime(item.lastSeenAt)),
      h("td", { "data-label": "Status changed" }, relativeTime(item.statusChangedAt)),
    );
    tr.dataset.status = item.status;
  }

  // Live changes for sensors on screen: update in place and flash the row.
  update(items) {
    for (const item of items) {
      const tr = this.rows.get(item.serial);
      if (!tr) continue;
      this.fill(tr, item);
      tr.classList.remove("flash");
      void tr.offsetWidth; // restart the animation
      tr.classList.add("flash");
    }
  }

  showError(error) {
    this.rows.clear();
    const message = `Could not load sensors: ${error.message}`;
    this.body.replaceChildren(h("tr", { class: "error" }, h("td", { colspan: 5, role: "alert" }, message)));
    this.pageInfo.textContent = "";
  }
}
