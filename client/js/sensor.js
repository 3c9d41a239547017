// A sensor's own page (`#/sensors/{serial}`): its state, where it stands, its availability and
// the timeline of its transitions, newest first, paged from GET /sensors/{serial}/events and
// grown live from the WebSocket (a status or version change becomes a new entry at the top).
// The page subscribes before it reads, keeps the changes that come before its facts and applies
// those newer than the facts once they are drawn (changes.js); the timeline, read apart, leaves
// out the events a live entry already shows.

import { getJSON } from "./api.js";
import { instant, older } from "./changes.js";
import { dateTime, h, relativeTime, serverNow } from "./format.js";
import { remember, versionCell, withReported } from "./versions.js";

const EVENTS_PAGE = 50;
const WINDOWS = { last24h: "24 h", last7d: "7 d" }; // availability windows the API gives

function percent(share) {
  return share == null ? "–" : `${(share * 100).toFixed(share === 1 ? 0 : 1)} %`;
}

function describe(event) {
  if (event.kind === "version") return `version ${event.old ?? "none"} → ${event.new ?? "none"}`;
  if (event.kind === "retired" || event.kind === "restored") return event.kind;
  const was = event.old === "never" ? "first report" : `was ${event.old}`;
  return `${event.new ?? event.kind} (${was})`;
}

export class SensorView {
  constructor({ section, onShow }) {
    this.section = section;
    this.onShow = onShow; // (serial) → a promise: its changes are followed
    this.serial = null;
    this.item = null;
    this.cursor = null;
    this.loading = null;
    this.missed = []; // changes that came before the facts, kept for them
  }

  async show(serial) {
    this.serial = serial;
    this.item = null;
    this.missed = [];
    const el = (id) => this.section.querySelector(`#${id}`);
    el("sensor-title").textContent = serial;
    el("sensor-facts").replaceChildren(h("p", { class: "empty" }, "Loading…"));
    el("sensor-timeline").replaceChildren();
    el("sensor-older").hidden = true;
    const request = (this.loading = {});
    await this.onShow(serial); // read after the subscription is in force: no change falls between
    if (request !== this.loading) return; // another sensor (or this one again) was asked for
    // Both asked at once; the facts show as soon as they come, the timeline when it does.
    const events = this.events(serial);
    events.catch(() => null); // reported below, once the facts are known to be current
    let detail;
    try {
      detail = await getJSON(`/sensors/${encodeURIComponent(serial)}`);
    } catch (error) {
      if (request === this.loading) {
        el("sensor-facts").replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
      }
      return;
    }
    if (request !== this.loading) return;
    this.item = withReported(detail);
    this.renderFacts();
    // What changed while the facts were read, where newer than they are.
    this.update(this.missed.filter((change) => !older(change, this.item)));
    this.missed = [];
    try {
      const page = await events;
      if (request === this.loading) this.append(page.items, page.nextCursor);
    } catch (error) {
      if (request === this.loading) {
        el("sensor-timeline").replaceChildren(h("li", { class: "error", role: "alert" }, `Could not load the timeline: ${error.message}`));
      }
    }
  }

  events(serial, cursor) {
    return getJSON(`/sensors/${encodeURIComponent(serial)}/events`, { cursor, limit: EVENTS_PAGE });
  }

  async older() {
    const serial = this.serial;
    const page = await this.events(serial, this.cursor);
    if (serial === this.serial) this.append(page.items, page.nextCursor);
  }

  // Availability comes from the API (computed from the events) and is recomputed at the next
  // load; live changes redraw the rest.
  renderFacts() {
    const item = this.item;
    const download = item.version
      ? h("a", { href: `/software/${encodeURIComponent(item.version)}/file`, download: "" }, `Download ${item.version}`)
      : null;
    const availability = Object.entries(WINDOWS).map(([key, window]) =>
      h("div", { class: "fact" }, h("dt", {}, `Online, last ${window}`), h("dd", { dataset: { window: key } }, percent(item.availability?.[key]))),
    );
    const fact = (label, ...value) => h("div", { class: "fact" }, h("dt", {}, label), h("dd", {}, ...value));
    this.section.querySelector("#sensor-facts").replaceChildren(
      h(
        "dl",
        { class: "facts" },
        fact("Status", this.status(item)),
        fact("Version", h("span", { id: "sensor-version" }, versionCell(item)), " ", download),
        fact("Site", item.site ?? "—"),
        fact("Label", item.label ?? "—"),
        fact("Last seen", h("span", { id: "sensor-last-seen" }, relativeTime(item.lastSeenAt))),
        fact("Status changed", relativeTime(item.statusChangedAt)),
        ...availability,
      ),
    );
  }

  status(item) {
    const status = item.retired ? "retired" : item.status;
    return h("span", { class: `badge ${status}`, id: "sensor-status" }, status === "never" ? "never seen" : status);
  }

  append(events, cursor) {
    const list = this.section.querySelector("#sensor-timeline");
    // A change made between the reads of the facts and of the timeline is in both: its live
    // entry is on the list already. A transition's live entry bears the time of its event.
    const shown = new Set([...list.children].map((li) => `${li.dataset.kind} ${li.dataset.at}`));
    const fresh = events.filter((event) => !shown.has(`${event.kind} ${instant(event.at)}`));
    list.append(...fresh.map((event) => this.entry(event)));
    if (!list.children.length) list.append(h("li", { class: "empty" }, "No transitions yet."));
    this.cursor = cursor ?? null;
    this.section.querySelector("#sensor-older").hidden = !this.cursor;
  }

  entry(event) {
    return h(
      "li",
      { dataset: { kind: event.kind, at: instant(event.at) } },
      h("time", { datetime: event.at, title: dateTime(event.at) }, dateTime(event.at)),
      " ",
      describe(event),
    );
  }

  // Live changes: this sensor's transitions join the top of the timeline; an operator's change
  // (site, label, retired or restored) redraws the facts.
  update(items) {
    for (const change of items) {
      if (change.serial !== this.serial) continue;
      remember(change);
      const before = this.item;
      if (!before) {
        this.missed.push(change); // the facts are being read: it may be newer than they are
        continue;
      }
      const item = { ...before, ...change }; // a report's change carries no label: it stays
      const entries = [];
      if (item.retired !== before.retired) {
        // Retiring an online sensor takes it offline: its history has an `offline` event, then
        // `retired`, both at its status change. A restore moves none of the sensor's times.
        const wentOffline = item.retired && before.status === "online";
        const at = wentOffline ? item.statusChangedAt : new Date(serverNow()).toISOString();
        if (wentOffline) entries.push({ at, kind: "offline", old: "online", new: "offline" });
        entries.push({ at, kind: item.retired ? "retired" : "restored" });
      } else if (item.status !== before.status) {
        entries.push({ at: item.statusChangedAt, kind: item.status, old: before.status, new: item.status });
      }
      if (item.version !== before.version) {
        entries.push({ at: item.lastSeenAt, kind: "version", old: before.version, new: item.version });
      }
      this.item = item;
      const list = this.section.querySelector("#sensor-timeline");
      list.querySelector(":scope > .empty")?.remove();
      list.prepend(...entries.reverse().map((event) => this.entry(event)));
      const redraw =
        entries.length ||
        ["site", "label"].some((key) => before[key] !== item[key]) ||
        (before.reportedVersion ?? null) !== (item.reportedVersion ?? null);
      if (redraw) this.renderFacts();
      else this.section.querySelector("#sensor-last-seen").replaceChildren(relativeTime(item.lastSeenAt));
    }
  }
}
