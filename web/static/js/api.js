// The modelpress API from the browser: fetch with the optional API key, upload with
// progress (XMLHttpRequest), live job state (EventSource / streamed fetch / polling),
// verified downloads.
const KEY_STORE = "modelpress.apiKey";

export const apiKey = {
  get: () => localStorage.getItem(KEY_STORE) || "",
  set: (v) => (v ? localStorage.setItem(KEY_STORE, v) : localStorage.removeItem(KEY_STORE)),
};

function authHeaders(extra = {}) {
  const key = apiKey.get();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(detailText(detail) || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

export function detailText(detail) {
  if (Array.isArray(detail)) {
    return detail.map((e) => (e && e.loc ? `${e.loc.filter((p) => p !== "body").join(".")}: ${e.msg}` : String(e))).join("; ");
  }
  return detail == null ? "" : typeof detail === "string" ? detail : JSON.stringify(detail);
}

const keyHint = (status, detail) => (status === 401 ? `${detailText(detail)} — set your API key (top right).` : detail);

async function errorFrom(resp) {
  let detail = resp.statusText;
  try {
    detail = (await resp.json()).detail ?? detail;
  } catch (_) { /* not JSON */ }
  return new ApiError(resp.status, keyHint(resp.status, detail));
}

export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, headers: authHeaders(headers) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `cannot reach the service (${e.message})`);
  }
  if (!resp.ok) throw await errorFrom(resp);
  return resp.status === 204 ? null : resp.json();
}

// Multipart POST of `file` plus string fields, with upload progress (fetch cannot report it).
function uploadForm(path, file, fields, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file, file.name);
    for (const [k, v] of Object.entries(fields)) if (v !== undefined) form.append(k, v);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress && onProgress(e.loaded, e.total);
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, keyHint(xhr.status, (data && data.detail) || xhr.statusText || "upload failed")));
    };
    xhr.onerror = () => reject(new ApiError(0, "upload failed: the connection broke"));
    xhr.send(form);
  });
}

export function uploadModel(file, { architecture, options, onProgress } = {}) {
  const opts = options && typeof options !== "string" ? JSON.stringify(options) : options;
  return uploadForm("/v1/models", file, { architecture: architecture || undefined, options: opts || undefined }, onProgress);
}

// .npz, safetensors, CSV, Parquet or JSONL; the server detects the format from the content.
export function uploadDataset(file, { onProgress } = {}) {
  return uploadForm("/v1/datasets", file, {}, onProgress);
}

export const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

// Calls onJob(job) on every change until the job finishes. Returns a stop() function.
// EventSource when no key is set (it cannot send headers), a streamed fetch with the
// Authorization header otherwise, polling every 2 s if streaming fails.
export function watchJob(id, onJob) {
  let stopped = false;
  let source = null;
  let controller = null;
  let timer = null;
  const url = `/v1/jobs/${encodeURIComponent(id)}/events`;
  const deliver = (job) => {
    if (stopped) return;
    onJob(job);
    if (FINISHED.has(job.status)) stop();
  };
  const poll = async () => {
    if (stopped) return;
    try { deliver(await api(`/v1/jobs/${encodeURIComponent(id)}`)); } catch (_) { /* keep trying */ }
    if (!stopped) timer = setTimeout(poll, 2000);
  };
  const viaEventSource = () => {
    if (!window.EventSource) return poll();
    let opened = false;
    source = new EventSource(url);
    source.onopen = () => { opened = true; };
    source.addEventListener("job", (e) => deliver(JSON.parse(e.data)));
    source.addEventListener("end", () => stop());
    source.onerror = () => {
      // After a good connection the browser reconnects on its own (server lifetime over);
      // if it never opened, streaming does not work here: poll instead.
      if (!opened || source.readyState === EventSource.CLOSED) {
        source.close();
        source = null;
        poll();
      }
    };
  };
  const viaFetch = async () => {
    while (!stopped) {
      controller = new AbortController();
      try {
        const resp = await fetch(url, { headers: authHeaders({ Accept: "text/event-stream" }), signal: controller.signal });
        if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            let name = "message";
            const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) name = line.slice(6).trim();
              else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
            }
            if (name === "job" && data.length) deliver(JSON.parse(data.join("\n")));
            if (name === "end") { stop(); return; }
          }
        }
      } catch (e) {
        if (stopped) return;
        return poll();
      }
    }
  };
  function stop() {
    stopped = true;
    if (source) source.close();
    if (controller) controller.abort();
    if (timer) clearTimeout(timer);
  }
  if (apiKey.get()) viaFetch(); else viaEventSource();
  return stop;
}

async function sha256Hex(buffer) {
  if (!(window.crypto && crypto.subtle)) return null; // only in secure contexts (https, localhost)
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// Fetches an artifact (with the API key), checks its sha256 against the server's
// X-Checksum-SHA256 and the listed value, then saves it. Returns "verified" or "unverified".
export async function downloadArtifact(art, onProgress) {
  const resp = await fetch(`/v1/artifacts/${encodeURIComponent(art.id)}/download`, { headers: authHeaders() });
  if (!resp.ok) throw await errorFrom(resp);
  const total = Number(resp.headers.get("content-length")) || art.size_bytes;
  const announced = resp.headers.get("x-checksum-sha256");
  const reader = resp.body.getReader();
  const chunks = [];
  let done = 0;
  for (;;) {
    const { value, done: end } = await reader.read();
    if (end) break;
    chunks.push(value);
    done += value.length;
    if (onProgress) onProgress(done, total);
  }
  const blob = new Blob(chunks, { type: "application/octet-stream" });
  const got = await sha256Hex(await blob.arrayBuffer());
  if (got && (got !== art.sha256 || (announced && got !== announced.toLowerCase()))) {
    throw new ApiError(0, `checksum mismatch for ${art.name}: got ${got}, expected ${art.sha256}; not saved`);
  }
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = art.name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
  return got ? "verified" : "unverified";
}
