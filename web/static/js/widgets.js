// Pieces shared by the dashboard's views: error boxes, progress bars, status badges, file drop zones,
// two-step delete buttons.
import { api, ApiError } from "./api.js";
import { bytes, h } from "./dom.js";

export function errorBox(err) {
  const text = err instanceof ApiError ? (err.status ? `HTTP ${err.status}: ${err.message}` : err.message) : String(err.message || err);
  return h("div", { class: "error", role: "alert" }, text);
}

export function progressBar(fraction, label = "") {
  const pct = Math.round(Math.max(0, Math.min(1, fraction || 0)) * 100);
  return h("div", { class: "progress", role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 },
    h("div", { class: "progress-fill", style: `width:${pct}%` }),
    h("span", { class: "progress-text" }, `${pct}%${label ? ` · ${label}` : ""}`));
}

export const badge = (status) => h("span", { class: `badge s-${status}`, "data-status": status }, status);

// A slot holding a progress bar (empty until the first set()).
export function progressSlot() {
  const element = h("div", { class: "progress-slot" });
  return { element, set: (fraction, label) => element.replaceChildren(progressBar(fraction, label)) };
}

// A drop zone with its hidden file input: onFile(file) on drop, on "choose a file" and on Enter/Space.
export function fileDrop({ id, inputId, title, help, accept, onFile }) {
  const input = h("input", { id: inputId, type: "file", hidden: true, accept });
  const zone = h("div", { class: "dropzone", id, tabindex: 0, role: "button" },
    h("strong", {}, title), h("span", {}, " or "),
    h("button", { type: "button", class: "link", onclick: () => input.click() }, "choose a file"),
    h("small", { class: "help" }, help));
  input.addEventListener("change", () => {
    if (input.files[0]) onFile(input.files[0]);
    input.value = "";   // the same file again is a new upload
  });
  zone.addEventListener("keydown", (e) => (e.key === "Enter" || e.key === " ") && input.click());
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files[0]) onFile(e.dataTransfer.files[0]);
  });
  return { zone, input };
}

// Runs send(onProgress) for file `f`, reporting in `status` and `bar` (a progressSlot).
// Returns what send resolved to, or null after showing the error.
export async function runUpload(f, { status, bar, send }) {
  status.replaceChildren(h("span", {}, `Uploading ${f.name} (${bytes(f.size)})…`));
  bar.set(0);
  try {
    const result = await send((done, total) => bar.set(done / total, `${bytes(done)} of ${bytes(total)}`));
    bar.set(1, "uploaded");
    status.replaceChildren(h("span", { class: "ok" }, `Uploaded ${result.filename}`));
    return result;
  } catch (err) {
    status.replaceChildren(errorBox(err));
    return null;
  }
}

// "Delete" -> "Delete? Yes, delete / keep": DELETE `url`, then onDeleted(); errors go to `message`.
export function confirmDelete({ url, label, message, onDeleted, text = "Delete" }) {
  const slot = h("span", { class: "delete-control nowrap" });
  const ask = () => slot.replaceChildren(
    h("span", { class: "muted" }, `${text}? `),
    h("button", { type: "button", class: "danger confirm-delete", onclick: remove }, "Yes, delete"), " ",
    h("button", { type: "button", class: "link", onclick: idle }, "keep"));
  const idle = () => slot.replaceChildren(
    h("button", { type: "button", class: "delete", "aria-label": label, onclick: ask }, text));
  async function remove(e) {
    e.target.disabled = true;
    message.replaceChildren();
    try {
      await api(url, { method: "DELETE" });
      onDeleted();
    } catch (err) {
      message.replaceChildren(errorBox(err));
      idle();
    }
  }
  idle();
  return slot;
}
