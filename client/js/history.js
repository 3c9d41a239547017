// Fleet history: sensors online, offline and never seen over a chosen range, as a hand-drawn
// SVG line chart. The samples (one a minute, GET /summary/history) are reloaded every minute;
// in between, the live totals from /ws are drawn as the newest point, so the chart keeps
// growing without a reload.

import { getJSON } from "./api.js";
import { count, serverNow } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const LINES = ["online", "offline", "never"]; // coloured by style.css (.history-chart)
const RANGES = { "1h": 3600e3, "6h": 6 * 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
const STEP_MS = { "1m": 60e3, "5m": 300e3, "1h": 3600e3, "1d": 86400e3 };
const RELOAD = 60_000; // ms: a new sample is written every minute
const GAP_STEPS = 2.5; // steps between two points beyond which the line breaks (daemons down)
const WIDTH = 720;
const HEIGHT = 220;
const PAD = { left: 56, right: 12, top: 12, bottom: 26 };

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  if (text != null) el.textContent = text;
  return el;
}

function timeLabel(ms, span) {
  const date = new Date(ms);
  if (span > 2 * 86400e3) return date.toLocaleDateString([], { month: "short", day: "numeric" });
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export class History {
  constructor({ chart, range, now }) {
    this.chart = chart; // container of the <svg>
    this.range = range; // <select> of RANGES keys
    this.now = now; // caption with the live totals
    this.points = []; // [{at, sampledAt (ms), online, offline, never}], oldest first
    this.step = "1m";
    this.latest = null; // the live totals, drawn as the newest point
    this.loading = 0;
    range.addEventListener("change", () => this.load());
  }

  start() {
    this.load();
    setInterval(() => this.load(), RELOAD);
  }

  span() {
    const to = serverNow();
    return { from: to - (RANGES[this.range.value] ?? RANGES["24h"]), to };
  }

  async load() {
    const ticket = ++this.loading; // a slow answer for an older range is dropped
    const { from, to } = this.span();
    try {
      const body = await getJSON("/summary/history", {
        from: new Date(from).toISOString(),
        to: new Date(to + 1000).toISOString(),
      });
      if (ticket !== this.loading) return;
      this.step = body.step;
      // sampledAt: an older daemon (a rolling upgrade) answers without it.
      this.points = body.points.map((p) => ({ ...p, at: Date.parse(p.at), sampledAt: Date.parse(p.sampledAt ?? p.at) }));
      this.chart.dataset.samples = String(this.points.length);
      this.draw();
    } catch (error) {
      if (ticket === this.loading) this.chart.dataset.error = error.message;
    }
  }

  live(totals) {
    this.latest = { at: serverNow(), online: totals.online, offline: totals.offline, never: totals.never };
    this.now.textContent =
      `now: ${count(totals.online)} online · ${count(totals.offline)} offline · ` +
      `${count(totals.never)} never seen`;
    this.draw();
  }

  draw() {
    const { from, to } = this.span();
    // A coarse bucket starting before the range holds samples in it: drawn at the left edge.
    const points = this.points
      .filter((p) => p.sampledAt >= from)
      .map((p) => (p.at < from ? { ...p, at: from } : p));
    // The live totals are the newest point only while no sample is newer: they come with
    // changes, and a quiet fleet sends none for minutes while a sample is written every minute.
    // A point stands at its bucket's start but holds the bucket's last sample, which in a
    // bucket of 5 minutes or more can be later than live totals drawn after the start.
    const newest = points.length ? points[points.length - 1].sampledAt : -Infinity;
    if (this.latest && this.latest.at > newest) points.push(this.latest);
    this.chart.dataset.points = String(points.length);
    if (!points.length) {
      this.chart.replaceChildren(document.createTextNode("No samples in this range yet."));
      return;
    }
    const most = Math.max(1, ...points.map((p) => Math.max(p.online, p.offline, p.never)));
    const w = WIDTH - PAD.left - PAD.right;
    const h = HEIGHT - PAD.top - PAD.bottom;
    const x = (ms) => PAD.left + ((ms - from) / (to - from)) * w;
    const y = (n) => PAD.top + h - (n / most) * h;
    const root = svg("svg", {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: "img",
      "aria-labelledby": "history-title history-desc",
      class: "history-chart",
    });
    const last = points[points.length - 1];
    root.append(
      svg("title", { id: "history-title" }, "Sensors online, offline and never seen over time"),
      svg("desc", { id: "history-desc" },
        `${points.length} points; latest: ${last.online} online, ${last.offline} offline, ${last.never} never seen`),
    );
    for (const n of [0, most / 2, most]) {
      root.append(
        svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(n), y2: y(n), class: "grid" }),
        svg("text", { x: PAD.left - 6, y: y(n) + 4, "text-anchor": "end", class: "axis" }, count(Math.round(n))),
      );
    }
    for (const ms of [from, (from + to) / 2, to]) {
      const anchor = ms === from ? "start" : ms === to ? "end" : "middle";
      root.append(svg("text", { x: x(ms), y: HEIGHT - 8, "text-anchor": anchor, class: "axis" }, timeLabel(ms, to - from)));
    }
    const gap = (STEP_MS[this.step] ?? 60e3) * GAP_STEPS;
    for (const status of LINES) {
      let d = "";
      points.forEach((p, i) => {
        const jump = i === 0 || p.at - points[i - 1].at > gap && p !== this.latest;
        // A sample after a gap starts a new stroke: a dot (round cap) until the next joins it.
        const at = `${x(p.at).toFixed(1)},${y(p[status]).toFixed(1)}`;
        d += jump ? `M${at}h0.01` : `L${at}`;
      });
      const line = svg("path", { d, class: `line ${status}`, "data-last": String(last[status]) });
      line.append(svg("title", {}, `${status}: ${last[status]} now`));
      root.append(line);
    }
    LINES.forEach((status, i) => {
      const label = status === "never" ? "never seen" : status;
      root.append(svg("text", { x: PAD.left + 8 + i * 90, y: PAD.top + 10, class: `legend ${status}` }, label));
    });
    this.chart.replaceChildren(root);
  }
}
