// Uploading release PDFs: drag and drop or the file picker, one request per file so each has
// its own progress bar and its own result; asks for the API key when the server wants one.

import { askApiKey, errorFrom, uploadFile } from "./api.js";
import { bytes, h } from "./format.js";

function describe(body) {
  const file = body.files[0];
  return file.outcome === "unchanged" ? `${file.version} was already stored` : `stored as ${file.version}`;
}

export class Uploader {
  constructor({ zone, input, list, dialog, onUploaded }) {
    this.zone = zone;
    this.list = list;
    this.dialog = dialog;
    this.onUploaded = onUploaded;
    this.queue = Promise.resolve();
    input.addEventListener("change", () => {
      this.add(input.files);
      input.value = "";
    });
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      this.add(event.dataTransfer.files);
    });
  }

  add(files) {
    for (const file of files) {
      const entry = this.entry(file);
      // One upload's unexpected failure is its own: it must not reject the queue, or every
      // later file would wait for good.
      this.queue = this.queue
        .then(() => this.send(file, entry))
        .catch((error) => failed(entry, `upload failed: ${error?.message ?? error}`));
    }
  }

  entry(file) {
    const progress = h("progress", { max: 1, value: 0, "aria-label": `Upload of ${file.name}` });
    const status = h("span", { class: "upload-status" }, "waiting");
    const item = h(
      "li",
      { class: "upload" },
      h("span", { class: "upload-name" }, file.name),
      h("span", { class: "upload-size" }, bytes(file.size)),
      progress,
      status,
    );
    this.list.prepend(item);
    return { item, progress, status };
  }

  async send(file, { item, progress, status }) {
    status.textContent = "uploading…";
    let result = await uploadFile(file, (fraction) => (progress.value = fraction));
    if (result.status === 401 && (await askApiKey(this.dialog))) {
      progress.value = 0;
      result = await uploadFile(file, (fraction) => (progress.value = fraction));
    }
    if (result.status >= 200 && result.status < 300) {
      const stored = describe(result.body); // throws on a body that is not the API's
      progress.value = 1;
      item.classList.add("ok");
      status.textContent = stored;
      this.onUploaded();
      return;
    }
    const error = result.status
      ? errorFrom(result.status, result.body, `HTTP ${result.status}`)
      : { message: "network error; is the server up?" };
    failed({ item, status }, error.message);
  }
}

// An upload's entry marked failed, saying why (announced to screen readers).
function failed({ item, status }, message) {
  item.classList.add("failed");
  status.textContent = message;
  status.setAttribute("role", "alert");
}
