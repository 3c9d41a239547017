// The software catalogue: uploaded releases, newest first, with their download links.

import { getJSON } from "./api.js";
import { bytes, count, dateTime, h } from "./format.js";

export class Catalogue {
  constructor({ table }) {
    this.body = table.tBodies[0];
  }

  async load() {
    let body;
    try {
      body = await getJSON("/software");
    } catch (error) {
      this.message(`Could not load the catalogue: ${error.message}`, "error");
      return;
    }
    const { items } = body;
    if (!items.length) {
      this.message("No releases uploaded yet.", "empty");
      return;
    }
    this.body.replaceChildren(...items.map((item) => this.row(item)));
  }

  row(item) {
    const sha = item.sha256 ?? "";
    return h(
      "tr",
      { dataset: { version: item.version } },
      h("th", { scope: "row", "data-label": "Version" }, item.version),
      h("td", { "data-label": "File" }, item.filename ?? ""),
      h("td", { "data-label": "Size" }, bytes(item.sizeBytes)),
      h("td", { "data-label": "SHA-256" }, h("code", { title: sha }, sha.slice(0, 12))),
      h("td", { "data-label": "Uploaded" }, dateTime(item.uploadedAt)),
      h("td", { "data-label": "Sensors" }, count(item.sensors)),
      h("td", {}, h("a", { href: item.fileUrl, download: "" }, "Download", h("span", { class: "visually-hidden" }, ` ${item.version}`))),
    );
  }

  message(text, kind) {
    this.body.replaceChildren(h("tr", { class: kind }, h("td", { colspan: 7 }, text)));
  }
}
