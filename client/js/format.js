// Shared formatting: relative times against the server's clock, sizes, dates.

let clockOffset = 0; // server time minus browser time, in ms (from the hello message)

export function syncClock(serverTime) {
  const server = Date.parse(serverTime);
  if (!Number.isNaN(server)) clockOffset = server - Date.now();
}

export function serverNow() {
  return Date.now() + clockOffset;
}

// "12 s ago", "5 min ago", "3 h ago", "2 d ago"; "never" for no time.
export function ago(iso, now = serverNow()) {
  if (!iso) return "never";
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 2) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function dateTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

export function bytes(n) {
  if (n == null) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

export function count(n) {
  return n == null ? "–" : Number(n).toLocaleString();
}

// A <time> element whose text is kept relative by `refreshTimes`.
export function relativeTime(iso) {
  const el = document.createElement("time");
  if (iso) {
    el.dateTime = iso;
    el.title = dateTime(iso);
    el.classList.add("ago");
  }
  el.textContent = ago(iso);
  return el;
}

export function refreshTimes(root = document) {
  const now = serverNow();
  for (const el of root.querySelectorAll("time.ago")) {
    el.textContent = ago(el.dateTime, now);
  }
}

// Element helper: h("td", {class: "x"}, "text", child).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  el.append(...children.filter((c) => c != null));
  return el;
}
