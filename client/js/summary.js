// Fleet totals and the chart of sensors per version (inline SVG, stacked by status).

import { count, h } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const STATUSES = ["online", "offline", "never"];
const MAX_BARS = 12; // versions drawn; the rest are summed as "other"

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  if (text != null) el.textContent = text;
  return el;
}

function bars(versions) {
  const rows = versions.map((v) => ({ ...v, label: v.version ?? "no version" }));
  if (rows.length <= MAX_BARS) return rows;
  const other = { label: "other", total: 0, online: 0, offline: 0, never: 0 };
  for (const row of rows.slice(MAX_BARS - 1)) {
    for (const key of ["total", ...STATUSES]) other[key] += row[key];
  }
  return [...rows.slice(0, MAX_BARS - 1), other];
}

export class Summary {
  constructor({ counts, chart }) {
    this.counts = counts; // {total, online, offline, never} → <dd>
    this.chart = chart;
  }

  render(totals) {
    this.counts.total.closest("dl")?.removeAttribute("aria-busy");
    this.counts.total.textContent = count(totals.total);
    for (const status of STATUSES) {
      this.counts[status].textContent = count(totals[status]);
    }
    this.chart.replaceChildren(this.draw(bars(totals.versions)));
  }

  draw(rows) {
    if (!rows.length) return h("p", { class: "empty" }, "No sensors yet.");
    const rowHeight = 26;
    const labelWidth = 96;
    const width = 380;
    // Room for the widest total after its bar (12px digits are at most ~7.5px wide), so
    // "1,000,000" is never clipped by the edge of the drawing.
    const valueWidth = 10 + 7.5 * Math.max(...rows.map((r) => count(r.total).length));
    const barSpace = width - labelWidth - valueWidth;
    const most = Math.max(...rows.map((r) => r.total), 1);
    const height = rows.length * rowHeight + 28;
    const described = rows.map((r) => `${r.label}: ${r.total} (${r.online} online)`).join("; ");
    const root = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-labelledby": "chart-title chart-desc",
      class: "version-chart",
    });
    root.append(
      svg("title", { id: "chart-title" }, "Sensors per version"),
      svg("desc", { id: "chart-desc" }, described),
    );
    rows.forEach((row, i) => {
      const y = i * rowHeight;
      const group = svg("g", { transform: `translate(0 ${y})` });
      group.append(svg("text", { x: labelWidth - 8, y: 17, class: "label" }, row.label));
      let x = labelWidth;
      for (const status of STATUSES) {
        const w = (row[status] / most) * barSpace;
        if (w > 0) {
          const rect = svg("rect", { x, y: 4, width: w, height: rowHeight - 8, class: status });
          rect.append(svg("title", {}, `${row.label}: ${row[status]} ${status}`));
          group.append(rect);
          x += w;
        }
      }
      group.append(svg("text", { x: x + 6, y: 17, class: "value" }, count(row.total)));
      root.append(group);
    });
    const legend = svg("g", { transform: `translate(${labelWidth} ${rows.length * rowHeight + 8})` });
    STATUSES.forEach((status, i) => {
      legend.append(
        svg("rect", { x: i * 80, y: 0, width: 12, height: 12, class: status }),
        svg("text", { x: i * 80 + 17, y: 11, class: "legend" }, status === "never" ? "never seen" : status),
      );
    });
    root.append(legend);
    return root;
  }
}
