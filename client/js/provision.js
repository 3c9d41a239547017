// Adding sensors by pasting CSV (`serial,site,label`) into POST /sensors: all or nothing, so a
// refusal lists the rows to fix and nothing was added. Asks for the API key like uploads do.

import { askApiKey, errorFrom, sendText } from "./api.js";
import { h } from "./format.js";

export class Provisioner {
  constructor({ form, result, dialog, onAdded }) {
    this.form = form;
    this.result = result;
    this.dialog = dialog;
    this.onAdded = onAdded;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
  }

  async send() {
    // Sent as typed: the server skips blank lines (above the header too) and numbers the
    // lines of what it got, which are then the box's.
    const csv = this.form.elements.csv.value;
    if (!csv.trim()) return;
    const post = () => sendText("POST", "/sensors", csv, "text/csv");
    let response = await post();
    if (response.status === 401 && (await askApiKey(this.dialog))) response = await post();
    if (response.ok) {
      const { created, existing } = response.body;
      this.show("ok", `${created} added, ${existing} already there.`);
      this.form.reset();
      this.onAdded();
      return;
    }
    const error = response.status
      ? errorFrom(response.status, response.body, `HTTP ${response.status}`)
      : { message: "network error; is the server up?" };
    const rows = response.body?.error?.rows ?? [];
    const where = (row) => (row.line != null ? `line ${row.line}` : `row ${row.index + 1}`);
    const told = /nothing was (stored|added)/i.test(error.message);
    this.show(
      "failed",
      told ? error.message : `${error.message} Nothing was added.`,
      rows.length ? h("ul", {}, ...rows.map((row) => h("li", {}, `${where(row)}: ${row.message}`))) : null,
    );
  }

  show(kind, text, details = null) {
    this.result.className = `provision-result ${kind}`;
    this.result.replaceChildren(h("p", { role: kind === "failed" ? "alert" : "status" }, text), details ?? "");
  }
}
