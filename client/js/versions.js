// Versions as sensors report them. A version nobody uploaded is never stored on the sensor, but
// while the daemon knows it (`reportedVersion`, in live messages and in the API's sensors),
// every view shows it, marked as not stored; remembered here per serial too, so a sensor whose
// reports reached this page through another daemon keeps showing it after a reload.

import { h } from "./format.js";

const reported = new Map(); // serial → version reported and not stored

// Note what a live change says about the version its sensor reports.
export function remember(item) {
  if (item.reportedVersion) reported.set(item.serial, item.reportedVersion);
  else if (item.status === "online" && item.reportedVersion === null) reported.delete(item.serial);
}

// `item` (from the API) with the reported version the API or a live change told, if any.
export function withReported(item) {
  if (item.reportedVersion) remember(item);
  const version = item.reportedVersion ?? reported.get(item.serial);
  return version ? { ...item, reportedVersion: version } : item;
}

export function versionCell(item) {
  if (!item.reportedVersion) return item.version ?? "—";
  const stored = item.version ? `stored: ${item.version}` : "nothing stored";
  return h(
    "span",
    { class: "unstored", title: `${item.reportedVersion} was never uploaded, so it is not stored (${stored})` },
    item.reportedVersion,
    " ",
    h("span", { class: "tag" }, "not stored"),
  );
}
