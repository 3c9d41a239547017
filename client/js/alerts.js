// The Alerts panel: webhooks with their delivery health; add one, remove one. Writes ask for
// the API key when the server wants one (as uploads do).

import { askApiKey, errorFrom, getJSON, sendJSON } from "./api.js";
import { h } from "./format.js";

const REFRESH = 5000; // ms between reloads of the delivery health

const HEALTH_TEXT = {
  ok: "healthy",
  retrying: "retrying",
  failing: "events failed",
};

// A webhook limited to some sensors says so (else it read as covering the whole fleet).
function sensorsHint(serials) {
  const named = serials.slice(0, 3).join(", ");
  const more = serials.length > 3 ? ` and ${serials.length - 3} more` : "";
  return `${serials.length === 1 ? "sensor" : `${serials.length} sensors:`} ${named}${more}`;
}

export class Alerts {
  constructor({ form, table, message, dialog }) {
    this.form = form;
    this.body = table.tBodies[0];
    this.message = message;
    this.dialog = dialog;
    this.loadError = null; // what a failed load said, until a load succeeds
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.add();
    });
  }

  start() {
    this.load();
    setInterval(() => this.load(), REFRESH);
  }

  async load() {
    try {
      const { items } = await getJSON("/webhooks");
      this.body.replaceChildren(...items.map((w) => this.row(w)));
      // A failed load's error is over once a load succeeds (unless something else was said).
      if (this.message.textContent === this.loadError) this.say("");
      this.loadError = null;
    } catch (error) {
      this.loadError = `Webhooks could not be loaded: ${error.message}`;
      this.say(this.loadError, true);
    }
  }

  row(hook) {
    const health = h("span", { class: `health ${hook.health}` }, HEALTH_TEXT[hook.health] ?? hook.health);
    const details = [
      `${hook.pending} pending`,
      hook.failed ? `${hook.failed} failed` : "",
      hook.lastError ? `last error: ${hook.lastError}` : "",
    ].filter(Boolean);
    const remove = h("button", { type: "button", "aria-label": `Remove webhook ${hook.url}` }, "Remove");
    remove.addEventListener("click", () => this.remove(hook));
    return h(
      "tr",
      { "data-id": String(hook.id) },
      h("td", { class: "webhook-url" }, hook.url),
      h(
        "td",
        {},
        hook.events.join(", "),
        hook.filter.site ? h("div", { class: "hint" }, `site ${hook.filter.site}`) : null,
        hook.filter.serials ? h("div", { class: "hint" }, sensorsHint(hook.filter.serials)) : null,
      ),
      h("td", {}, health, h("div", { class: "hint" }, details.join(" · "))),
      h("td", {}, remove),
    );
  }

  async write(method, path, body) {
    let result = await sendJSON(method, path, body);
    if (result.status === 401 && (await askApiKey(this.dialog))) {
      result = await sendJSON(method, path, body);
    }
    return result;
  }

  async add() {
    const fields = this.form.elements;
    const events = [...this.form.querySelectorAll("input[name=event]:checked")].map((e) => e.value);
    const body = { url: fields.url.value.trim(), events, secret: fields.secret.value };
    if (fields.threshold.value) body.onlineBelow = Number(fields.threshold.value) / 100;
    // A site limits sensor events to its sensors, and the online share to its own.
    if (fields.site.value.trim()) body.filter = { site: fields.site.value.trim() };
    const result = await this.write("POST", "/webhooks", body);
    if (result.status === 201) {
      this.form.reset();
      this.say(`Webhook ${result.body.id} added.`);
      await this.load();
      return;
    }
    this.failed(result, "could not add the webhook");
  }

  async remove(hook) {
    const result = await this.write("DELETE", `/webhooks/${hook.id}`);
    if (result.status === 204 || result.status === 404) {
      this.say(`Webhook ${hook.id} removed.`);
      await this.load();
      return;
    }
    this.failed(result, "could not remove the webhook");
  }

  failed(result, fallback) {
    const error = result.status
      ? errorFrom(result.status, result.body, fallback)
      : { message: "network error; is the server up?" };
    this.say(error.message, true);
  }

  say(text, isError = false) {
    this.message.textContent = text;
    this.message.classList.toggle("error", isError);
  }
}
