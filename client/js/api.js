// The HTTP API: JSON reads, writes and uploads with progress and the API key.

const KEY_STORAGE = "droneshield.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function errorFrom(status, body, fallback) {
  const error = body && body.error;
  return new ApiError(status, error?.code ?? "http_" + status, error?.message ?? fallback);
}

// A read that could not reach the server while the live connection is down: what is on screen
// stays (marked stale, "as of" the last message), and the reconnection reloads every view.
export function keptWhileStale(error) {
  return document.body.dataset.stale !== undefined && !(error instanceof ApiError);
}

export async function getJSON(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== "" && value != null) url.searchParams.set(name, value);
  }
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw errorFrom(response.status, body, response.statusText);
  return body;
}

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE);
}

export function forgetApiKey() {
  localStorage.removeItem(KEY_STORAGE);
}

// Ask for the key in a modal dialog; resolves to the key, or null when cancelled.
export function askApiKey(dialog) {
  const form = dialog.querySelector("form");
  const input = form.elements.key;
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const key = dialog.returnValue === "ok" ? input.value.trim() : "";
        if (key) localStorage.setItem(KEY_STORAGE, key);
        resolve(key || null);
      },
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
}

// A write with a text body (and the API key when one is kept). Resolves to {ok, status, body};
// network failures resolve with status 0.
export async function sendText(method, path, text, type) {
  const headers = { Accept: "application/json", "Content-Type": type };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body: text });
  } catch {
    return { ok: false, status: 0, body: null };
  }
  const body = await response.json().catch(() => null);
  if (response.status === 401 && body?.error?.code === "invalid_api_key") forgetApiKey();
  return { ok: response.ok, status: response.status, body };
}

// POST one file to /upload with XMLHttpRequest, for its upload progress events.
// Resolves to {status, body}; network failures resolve with status 0.
export function uploadFile(file, onProgress) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/upload");
    xhr.setRequestHeader("Accept", "application/json");
    const key = apiKey();
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // not JSON: reported by status below
      }
      // A key the server refused is forgotten, so the next upload asks for the right one.
      if (xhr.status === 401 && body?.error?.code === "invalid_api_key") forgetApiKey();
      resolve({ status: xhr.status, body });
    });
    xhr.addEventListener("error", () => resolve({ status: 0, body: null }));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

// A JSON write (POST, DELETE) with the API key; resolves to {status, body}, status 0 when the
// server could not be reached.
export async function sendJSON(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  try {
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: await response.json().catch(() => null) };
  } catch {
    return { status: 0, body: null };
  }
}
