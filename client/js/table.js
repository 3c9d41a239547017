// The sensor list: one page of GET /sensors with its filters, sort and page in the address.
// Live changes update rows in place; a row flashes only when its status or version changes
// (a heartbeat moves "last seen" quietly) or an operator changes it. A row that stops matching
// the filter (a report, another site or label, a retirement), or whose sort key moved, is
// marked and leaves at the next refresh; sensors that enter the filter are counted ("3 new —
// show"). A refresh comes by itself within REFRESH while anything is marked
// or the fleet totals moved under a filter they cannot count (site, text).
//
// A read and the live changes race: a change that arrives while the page's read is in flight
// can be newer than the read. So a load first makes sure the server sends the changes the new
// page needs, keeps every change that arrives until the read is drawn, then applies those that
// are newer than the rows the read returned (changes.js says which): an older read never
// overwrites a newer change, whether the load is a resync, a reconnect, a refresh or a new page.

import { getJSON, keptWhileStale } from "./api.js";
import { older } from "./changes.js";
import { count, h, relativeTime } from "./format.js";
import { sensorHash } from "./router.js";
import { remember, versionCell, withReported } from "./versions.js";

// `cursor`: where the page starts when it lies past what a search counts (the API's page
// numbers reach its first 10,000 matches; `nextCursor` goes on from there). The page number
// stays in the address beside it, for the pager to show.
const DEFAULTS = {
  page: 1,
  cursor: "",
  limit: 50,
  status: "",
  version: "",
  site: "",
  q: "",
  sort: "serial",
  order: "asc",
};
const SEARCH_DELAY = 250; // ms of typing quiet before the search runs
const COUNT_CAP = 10000; // matches a search (or the retired list) counts: its numbered pages
const REFRESH = 10000; // ms: a page with marked rows, new sensors or a stale total reloads
const COLUMNS = 5;
// Sort keys a live change can move (last seen moves with every heartbeat: the page simply
// reorders at its next refresh, nothing is marked for it).
const LIVE_KEYS = { status_changed_at: "statusChangedAt", version: "version" };

function stateOf(params) {
  const state = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS)) {
    if (params.has(key)) state[key] = params.get(key);
  }
  state.page = Math.max(1, parseInt(state.page, 10) || 1);
  state.limit = parseInt(state.limit, 10) || DEFAULTS.limit;
  return state;
}

function paramsOf(state) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) {
    if (value !== DEFAULTS[key] && value !== "") params.set(key, value);
  }
  return params;
}

// A search ignores the case of ASCII letters only, as the server does (domain.fold): other
// letters are folded differently by browsers, Python and PostgreSQL.
function fold(text) {
  return text.replace(/[A-Z]+/g, (letters) => letters.toLowerCase());
}

function badge(status) {
  const text = status === "never" ? "never seen" : status;
  return h("span", { class: `badge ${status}` }, text);
}

export class SensorTable {
  constructor({ table, form, pager, pageInfo, caption, notice, navigate, watch, onPage }) {
    this.table = table;
    this.body = table.tBodies[0];
    this.form = form;
    this.pager = pager;
    this.pageInfo = pageInfo;
    this.caption = caption;
    this.notice = notice;
    this.navigate = navigate; // (params, {replace}) → the address, which shows the page
    this.watch = watch; // (serials, filter) → a promise: that subscription is in force
    this.onPage = onPage; // called with the serials on screen and the live filter
    this.state = { ...DEFAULTS };
    this.lastPage = 1;
    this.limit = null; // the last page's limit, as the server applied it
    this.total = null;
    this.totalExact = true;
    this.nextCursor = null;
    this.rows = new Map(); // serial → {tr, item}
    this.entered = new Set(); // serials that entered the filter since the page loaded
    this.marked = 0;
    this.loading = null;
    this.missed = null; // while a read is in flight: the live changes since it was asked for
    this.refreshTimer = null;
    this.bind();
  }

  bind() {
    const { elements } = this.form;
    this.form.addEventListener("change", (event) => {
      if (event.target.name !== "q" && event.target.name !== "site") this.filter();
    });
    let typing;
    for (const name of ["q", "site"]) {
      elements[name].addEventListener("input", () => {
        clearTimeout(typing);
        typing = setTimeout(() => this.filter({ replace: true }), SEARCH_DELAY);
      });
    }
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.filter();
    });
    this.pager.addEventListener("click", (event) => {
      const go = event.target.closest("button")?.dataset.go;
      if (go) this.go(go);
    });
    this.table.tHead.addEventListener("click", (event) => {
      const key = event.target.closest("button[data-sort]")?.dataset.sort;
      if (key) this.sortBy(key);
    });
    this.body.addEventListener("click", (event) => {
      const tr = event.target.closest("tr[data-serial]");
      if (tr && !event.target.closest("a")) location.assign(sensorHash(tr.dataset.serial));
    });
    this.body.addEventListener("keydown", (event) => {
      const tr = event.target.closest("tr[data-serial]");
      if (tr && event.key === "Enter") location.assign(sensorHash(tr.dataset.serial));
    });
    this.notice.addEventListener("click", (event) => {
      if (event.target.closest("button")) this.load();
    });
  }

  // The list as the address says (a deep link, Back/Forward, an edited address).
  show(params) {
    this.state = stateOf(params);
    const { elements } = this.form;
    for (const name of ["status", "version", "limit", "q", "site"]) {
      const field = elements[name];
      const value = String(this.state[name]);
      // Typing: what is typed stays (a space before the next word is trimmed only from the
      // address; written back, a pause while typing "north gate" gave "northgate").
      if (field === document.activeElement && field.value.trim() === value) continue;
      field.value = value;
    }
    this.load();
  }

  change(changes, { replace = false } = {}) {
    this.navigate(paramsOf({ ...this.state, ...changes }), { replace });
  }

  filter({ replace = false } = {}) {
    const { elements } = this.form;
    this.change(
      {
        q: elements.q.value.trim(),
        site: elements.site.value.trim(),
        status: elements.status.value,
        version: elements.version.value,
        limit: parseInt(elements.limit.value, 10),
        page: 1,
        cursor: "",
      },
      { replace },
    );
  }

  go(where) {
    if (where === "next" && this.pastCount(this.state.page + 1)) {
      this.change({ page: this.state.page + 1, cursor: this.nextCursor });
      return;
    }
    const page = {
      first: 1,
      prev: this.state.page - 1,
      next: this.state.page + 1,
      last: this.lastPage,
    }[where];
    this.change({ page: Math.min(Math.max(1, page), this.lastPage), cursor: "" });
  }

  // Whether page `page` lies past the matches a search counted (its total a bound): reached
  // only by following the previous page's cursor.
  pastCount(page) {
    return !this.totalExact && page > this.lastPage;
  }

  // A header clicked: sort by it, or turn the order round when it already sorts.
  sortBy(key) {
    const again = this.state.sort === key;
    const order = again ? (this.state.order === "asc" ? "desc" : "asc") : key === "serial" ? "asc" : "desc";
    this.change({ sort: key, order, page: 1, cursor: "" });
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

  // The filter the server applies to live changes, so sensors entering it are announced; none
  // when nothing narrows the list (every transition in the fleet would be "new").
  liveFilter() {
    const { status, version, site, q, sort } = this.state;
    const where = Object.fromEntries(
      Object.entries({ status, version, site, q }).filter(([, value]) => value !== ""),
    );
    const narrowed = Object.keys(where).length > 0 || sort === "status_changed_at";
    return narrowed ? where : null;
  }

  // Reload the current page (after a change of view, a reconnect, a resync or a refresh).
  async load() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    if (this.pastNumbers()) {
      // Past the numbered pages of a count that stops at the cap (the API refuses them): the
      // last of them, from which Next follows the cursor.
      this.change({ page: Math.ceil(COUNT_CAP / this.state.limit) }, { replace: true });
      return;
    }
    const load = (this.loading = {});
    this.missed ??= []; // a superseded load's changes are kept too: they may concern this read
    await this.watch(...this.watching());
    if (load !== this.loading) return; // a newer load superseded this one
    let page;
    try {
      page = await getJSON("/sensors", this.query());
    } catch (error) {
      if (load === this.loading) this.showError(error);
      return;
    }
    if (load !== this.loading) return;
    this.render(page);
  }

  // Whether the address asks by number for a page the API numbers no further.
  pastNumbers() {
    const { q, status, cursor, page, limit } = this.state;
    return Boolean(q || status === "retired") && !cursor && (page - 1) * limit >= COUNT_CAP;
  }

  // GET /sensors' parameters: a cursor says where the page starts, so no page number with it.
  query() {
    const { page, cursor, ...rest } = this.state;
    return cursor ? { ...rest, cursor } : { ...rest, page };
  }

  // What to watch while the page is read, so that no change the new rows need can fall between
  // the read and the subscription to those rows (their serials are known only once it is
  // read): the rows on screen, which a reload shows again, with every change of them, and
  // every transition (never a heartbeat) of the sensors the page's filter admits, the whole
  // fleet when there is none. A transition is what a heartbeat cannot repair: a sensor gone
  // offline sends nothing more. The page's own subscription follows once it is drawn.
  watching() {
    return [[...this.rows.keys()], this.liveFilter() ?? {}];
  }

  render(page) {
    const { items, total, limit, totalExact } = page;
    if (!this.state.cursor) this.state.page = page.page ?? this.state.page; // a cursor's: 1
    this.total = total;
    this.totalExact = totalExact !== false;
    this.nextCursor = page.nextCursor ?? null;
    this.limit = limit; // as the server applied it (larger ones are capped)
    this.lastPage = Math.max(1, Math.ceil(total / limit));
    if (!items.length && this.totalExact && this.state.page > this.lastPage && !this.state.cursor) {
      // A page past the end (an old link, an edited address, sensors retired meanwhile).
      this.change({ page: this.lastPage }, { replace: true });
      return;
    }
    this.rows.clear();
    this.entered.clear();
    this.marked = 0;
    const missed = this.missed ?? [];
    this.missed = null;
    // Listed sensors are retired exactly on the retired list (the API lists no others there).
    const retired = this.state.status === "retired";
    const rows = items.map((item) => this.row(withReported({ retired, ...item })));
    if (!rows.length) {
      rows.push(h("tr", { class: "empty" }, h("td", { colspan: COLUMNS }, "No sensors match.")));
    }
    this.body.replaceChildren(...rows);
    this.catchUp(missed);
    this.showTotal();
    this.showHeaders();
    this.showNotice();
    this.onPage(
      items.map((item) => item.serial),
      this.liveFilter(),
    );
  }

  // Changes that came while the page was read, applied to its rows where newer than the read.
  // Sensors not on the page are left out: whether they entered the filter before the read (it
  // counted them) or after cannot be told from their change.
  catchUp(changes) {
    for (const change of changes) {
      const shown = this.rows.get(change.serial);
      if (shown && !older(change, shown.item)) this.updateRow(shown, change);
    }
  }

  showTotal() {
    const { page } = this.state;
    const about = this.totalExact ? "" : "at least ";
    const pages = this.pastCount(page) ? "" : ` of ${about}${count(this.lastPage)}`;
    const text = `Page ${count(page)}${pages} · ${about}${count(this.total)} sensors`;
    this.pageInfo.textContent = text;
    this.caption.textContent = `Sensors, ${text}`;
    const disabled = {
      first: page <= 1,
      // Past the count a page's predecessor has no number the API takes: Back returns to it.
      prev: page <= 1 || this.pastCount(page - 1),
      next: this.totalExact ? page >= this.lastPage : this.nextCursor === null,
      last: !this.totalExact || page >= this.lastPage,
    };
    for (const button of this.pager.querySelectorAll("button")) {
      button.disabled = disabled[button.dataset.go];
    }
  }

  showHeaders() {
    for (const th of this.table.tHead.querySelectorAll("th[data-key]")) {
      const sorted = th.dataset.key === this.state.sort;
      if (sorted) th.setAttribute("aria-sort", this.state.order === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
  }

  // Fleet totals changed: where the page's total is one of them, it follows at once, so the
  // two never disagree; under other filters (site, text) the page is recounted at a refresh.
  fleet(totals) {
    const { status, version } = this.state;
    if (this.total == null || status === "retired") return;
    if (this.state.q || this.state.site) {
      this.scheduleRefresh();
      return;
    }
    const from = version ? totals.versions.find((v) => v.version === version) ?? { total: 0 } : totals;
    const total = status ? from[status] ?? 0 : from.total;
    if (total === this.total) return;
    this.total = total;
    this.totalExact = true;
    this.lastPage = Math.max(1, Math.ceil(total / (this.limit ?? this.state.limit)));
    this.showTotal();
  }

  row(item) {
    const tr = h("tr", { tabindex: 0, dataset: { serial: item.serial } });
    this.fill(tr, item);
    this.rows.set(item.serial, { tr, item });
    return tr;
  }

  fill(tr, item) {
    tr.replaceChildren(
      h("th", { scope: "row", "data-label": "Serial" }, h("a", { href: sensorHash(item.serial) }, item.serial)),
      h("td", { "data-label": "Status" }, badge(item.retired ? "retired" : item.status)),
      h("td", { "data-label": "Version" }, versionCell(item)),
      h("td", { "data-label": "Last seen" }, relativeTime(item.lastSeenAt)),
      h("td", { "data-label": "Status changed" }, relativeTime(item.statusChangedAt)),
    );
    tr.dataset.status = item.status;
  }

  // Live changes: rows on screen are updated; other sensors are ones entering the filter.
  update(items) {
    this.missed?.push(...items);
    for (const item of items) {
      remember(item);
      const shown = this.rows.get(item.serial);
      if (shown) this.updateRow(shown, item);
      else if (this.liveFilter() && this.matches(item) && !this.matchedBefore(item)) {
        this.entered.add(item.serial);
      } else if (!this.matches(item)) this.entered.delete(item.serial); // entered, then left
    }
    this.showNotice();
  }

  updateRow(shown, change) {
    const { tr, item: before } = shown;
    const item = { ...before, ...change }; // a report's change carries no label: it stays
    const noticed = ["status", "version", "retired", "site", "label"].some((key) => before[key] !== item[key]) ||
      (before.reportedVersion ?? null) !== (item.reportedVersion ?? null);
    shown.item = item;
    if (!noticed) {
      // A heartbeat: "last seen" only, no flash.
      tr.querySelector('[data-label="Last seen"]').replaceChildren(relativeTime(item.lastSeenAt));
      return;
    }
    this.fill(tr, item);
    tr.classList.remove("flash");
    void tr.offsetWidth; // restart the animation
    tr.classList.add("flash");
    const why = this.leaves(before, item);
    if (why && !tr.dataset.leaving) this.marked += 1;
    if (!why && tr.dataset.leaving && tr.dataset.leaving !== "moved") {
      // It matches the filter again (back online on an online page): it stays after all. A
      // row that moved stays out of its place whatever comes next.
      delete tr.dataset.leaving;
      this.marked -= 1;
    }
    if (why) {
      tr.dataset.leaving = why;
      tr.lastElementChild.append(h("span", { class: "leaving" }, ` · ${why}, leaves at the next refresh`));
    }
  }

  // Why a changed row leaves the page at the next refresh; null when it stays.
  leaves(before, item) {
    if (!this.matches(item)) {
      if (item.retired && !before.retired) return "retired";
      return before.retired && !item.retired ? "restored" : "no longer matches";
    }
    return this.moved(before, item) ? "moved" : null;
  }

  // Whether the filter already admitted the sensor before this change (a report or an expiry
  // says what it was): then it is on another page of the list, not new to it.
  matchedBefore(item) {
    return item.before != null && this.matches({ ...item, ...item.before });
  }

  // Whether a live change matches the page's filter. The label comes only with an operator's
  // change; without it, a search is judged by the serial alone where it matches, else kept.
  matches(item) {
    const { status, version, site, q } = this.state;
    if (Boolean(item.retired) !== (status === "retired")) return false;
    if (status && status !== "retired" && item.status !== status) return false;
    if (version && item.version !== version) return false;
    if (site && item.site !== undefined && item.site !== site) return false;
    if (q && item.label !== undefined) {
      const needle = fold(q);
      return [item.serial, item.label ?? ""].some((text) => fold(text).includes(needle));
    }
    return true;
  }

  moved(before, item) {
    const key = LIVE_KEYS[this.state.sort];
    return key !== undefined && before[key] !== item[key];
  }

  showNotice() {
    const parts = [];
    if (this.entered.size) parts.push(`${count(this.entered.size)} new`);
    if (this.marked) parts.push(`${count(this.marked)} leaving`);
    if (!parts.length) {
      this.notice.replaceChildren();
      this.notice.hidden = true;
      return;
    }
    this.notice.hidden = false;
    this.notice.replaceChildren(`${parts.join(" · ")} — `, h("button", { type: "button", class: "link" }, "show"));
    this.scheduleRefresh();
  }

  scheduleRefresh() {
    if (!this.refreshTimer) this.refreshTimer = setTimeout(() => this.load(), REFRESH);
  }

  showError(error) {
    if (keptWhileStale(error) && this.rows.size) return;
    this.rows.clear();
    this.missed = null;
    const message = `Could not load sensors: ${error.message}`;
    this.body.replaceChildren(h("tr", { class: "error" }, h("td", { colspan: COLUMNS, role: "alert" }, message)));
    this.pageInfo.textContent = "";
  }
}
