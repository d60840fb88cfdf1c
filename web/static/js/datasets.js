// Datasets: upload, list (paginated), delete; and the job form's data selectors by role.
import { api, uploadDataset } from "./api.js";
import { bytes, h, when } from "./dom.js";
import { confirmDelete, errorBox, fileDrop, progressSlot, runUpload } from "./widgets.js";

const PAGE = 20;
export const ROLES = [
  ["calibration", "Calibration data", "for gptq, saliency pruning, static int8 (the train data stands in when absent)"],
  ["train", "Training data", "for finetune and distill (labels optional)"],
  ["eval", "Evaluation data", "task metrics before and after every stage; early stopping"],
];

// "inputs [784] float32" for each input, or "text" for JSONL.
export function inputsText(summary = {}) {
  if (summary.text) return "text";
  const inputs = summary.inputs || [];
  if (!inputs.length) return "–";
  return inputs.map((i) => `${i.name} [${(i.shape || []).join(", ")}] ${i.dtype || ""}`.trim()).join("; ");
}

export function labelsText(summary = {}) {
  const l = summary.labels;
  if (!l) return "none";
  return `${l.classes} classes (${l.min}–${l.max})`;
}

const samplesText = (summary = {}) => (summary.samples != null ? Number(summary.samples).toLocaleString() : "–");

// ---------------------------------------------------------------------------- upload

function uploadCard(onUploaded) {
  const status = h("div", { class: "upload-status", id: "dataset-status", "aria-live": "polite" });
  const bar = progressSlot();
  const { zone, input } = fileDrop({
    id: "dataset-dropzone", inputId: "dataset-file", title: "Drop a dataset file here",
    accept: ".npz,.safetensors,.csv,.parquet,.jsonl,.json",
    help: ".npz or safetensors (inputs or x, or input_0, input_1…; optional labels or y), CSV or Parquet "
      + "(numeric columns, optional 'label'), JSONL text ({\"text\": …, \"label\": …} per line)",
    onFile: async (f) => {
      const ds = await runUpload(f, { status, bar, send: (onProgress) => uploadDataset(f, { onProgress }) });
      if (ds) onUploaded(ds);
    },
  });
  return h("section", { class: "card", id: "dataset-upload" },
    h("h2", {}, "Upload a dataset"),
    h("p", { class: "help" }, "Calibration, training and evaluation data that jobs name by role. "
      + "The format is detected from the content and the whole file is checked before it is stored."),
    zone, input, bar.element, status);
}

// ---------------------------------------------------------------------------- list

function deleteCell(ds, message, onDeleted) {
  return h("td", { class: "nowrap" }, confirmDelete({
    url: `/v1/datasets/${encodeURIComponent(ds.id)}`, label: `delete ${ds.filename}`, message,
    onDeleted: () => onDeleted(ds) }));
}

function datasetRow(ds, message, onDeleted) {
  const s = ds.summary || {};
  return h("tr", { "data-dataset": ds.id },
    h("td", {}, h("div", { class: "filename" }, ds.filename), h("code", { class: "hash", title: ds.id }, ds.id)),
    h("td", {}, ds.format),
    h("td", { class: "samples" }, samplesText(s)),
    h("td", { class: "shapes" }, inputsText(s)),
    h("td", {}, labelsText(s)),
    h("td", { class: "nowrap" }, bytes(ds.size_bytes)),
    h("td", { class: "muted" }, when(ds.created_at)),
    deleteCell(ds, message, onDeleted));
}

function pager(page, go) {
  const first = page.items.length ? page.offset + 1 : 0;
  return h("div", { class: "pager" },
    h("span", { class: "muted" }, `${first}–${page.offset + page.items.length} of ${page.total}`),
    h("button", { type: "button", id: "datasets-prev", disabled: page.offset === 0,
      onclick: () => go(Math.max(0, page.offset - page.limit)) }, "← Previous"),
    h("button", { type: "button", id: "datasets-next", disabled: page.next_offset == null,
      onclick: () => go(page.next_offset) }, "Next →"));
}

function listCard() {
  const tbody = h("tbody");
  const nav = h("div");
  const message = h("div", { id: "datasets-message", "aria-live": "polite" });
  let offset = 0;
  const render = async (to = offset) => {
    try {
      const page = await api(`/v1/datasets?limit=${PAGE}&offset=${to}`);
      if (!page.items.length && to > 0) return render(Math.max(0, to - PAGE));   // the last one on a page went
      offset = to;
      const gone = () => render();
      tbody.replaceChildren(...page.items.map((ds) => datasetRow(ds, message, gone)));
      if (!page.items.length) tbody.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No datasets yet.")));
      nav.replaceChildren(...(page.total > PAGE ? [pager(page, render)] : []));
    } catch (err) {
      message.replaceChildren(errorBox(err));
    }
  };
  const section = h("section", { class: "card", id: "datasets" },
    h("h2", {}, "Datasets"),
    h("div", { class: "scroll" }, h("table", { class: "datasets" },
      h("thead", {}, h("tr", {}, ["File", "Format", "Samples", "Inputs (per sample)", "Labels", "Size", "Created", ""]
        .map((t) => h("th", {}, t)))), tbody)),
    nav, message);
  section.refresh = () => render(0);
  return section;
}

export function datasetsView() {
  const list = listCard();
  const upload = uploadCard(() => list.refresh());
  list.refresh();
  return [upload, list];
}

// ---------------------------------------------------------------------------- job form

const optionText = (ds) => `${ds.filename} · ${samplesText(ds.summary)} samples · ${inputsText(ds.summary)} · ${ds.id}`;

// Selectors for the three roles. read() -> {role: id} of the chosen ones, or undefined when none is.
export function dataSelectors() {
  const selects = ROLES.map(([role]) => h("select", { id: `data-${role}`, name: role }));
  const note = h("small", { class: "help" });
  const element = h("fieldset", { class: "data-roles", id: "data-roles" },
    h("legend", {}, "Data (optional)"),
    h("div", { class: "fields" }, ROLES.map(([role, title, help], i) => h("div", { class: "field" },
      h("label", { for: `data-${role}` }, title), selects[i], h("small", { class: "help" }, help)))),
    note, " ", h("a", { href: "#/datasets" }, "Upload or manage datasets"));
  return {
    element,
    fill(page) {
      for (const sel of selects) {
        const keep = sel.value;
        sel.replaceChildren(h("option", { value: "" }, "(none)"), ...page.items.map((ds) => h("option", { value: ds.id }, optionText(ds))));
        if (page.items.some((ds) => ds.id === keep)) sel.value = keep;
      }
      note.textContent = page.total > page.items.length ? `Showing the newest ${page.items.length} of ${page.total} datasets.`
        : page.total ? "" : "No datasets uploaded yet.";
    },
    read() {
      const data = {};
      ROLES.forEach(([role], i) => { if (selects[i].value) data[role] = selects[i].value; });
      return Object.keys(data).length ? data : undefined;
    },
  };
}
