// modelpress dashboard: upload, job builder, jobs list, job page, datasets. No build step.
import { api, apiKey, detailText, downloadArtifact, FINISHED, uploadModel, watchJob } from "./api.js";
import { barChart } from "./charts.js";
import { dataSelectors, datasetsView } from "./datasets.js";
import { bytes, h, uuid, when } from "./dom.js";
import { methodForm } from "./forms.js";
import { analyzeCard, goalCard, goalLine } from "./goal.js";
import { evaluationCard, trainingLine, trainingLogCard, trainingText } from "./training.js";
import { badge, confirmDelete, errorBox, fileDrop, progressBar, progressSlot, runUpload } from "./widgets.js";

const main = document.getElementById("main");
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
let cleanups = [];
let lastUploaded = null;
let routeSeq = 0;   // a view whose route has been left since it started must not draw or watch
const stale = (seq) => seq !== routeSeq;

function cleanup() {
  cleanups.forEach((f) => f());
  cleanups = [];
}


// The job's quality verdict: red when the compressed model did not keep the upload's quality.
export function qualityBox(q) {
  const kept = q.passed === true;
  return h("div", { class: kept ? "verdict kept" : "failure verdict", id: "quality", role: kept ? null : "alert" },
    h("strong", {}, kept ? "Quality kept" : "Quality NOT kept: this model may be destroyed"),
    h("p", {}, q.summary || q.reason || ""),
    q.note ? h("p", { class: "muted" }, q.note) : null);
}

// Failure reasons in plain words (the raw error is always shown too).
export function explain(error) {
  if (!error) return "The job failed without a reason.";
  const e = error.toLowerCase();
  if (e.includes("input_shape")) {
    return "The service could not make sample inputs for this model: TorchScript and exported programs need an "
      + "input shape. Upload the model again with options such as {\"input_shape\": [1, 784]}.";
  }
  if (e.includes("stopped responding") || e.includes("heartbeat")) {
    return "The worker running this job stopped responding (it crashed or was restarted) more often than allowed.";
  }
  if (e.includes("time limit") || e.includes("timed out") || e.includes("timeout")) return "The job ran longer than the service allows.";
  if (e.includes("memory")) return "The job needed more memory than the service allows; try a smaller model or a lighter recipe.";
  if (e.includes("cancel")) return "The job was cancelled.";
  if (e.includes("dataset") || e.includes("training loss")) {
    return "The job's data could not be used: check that the datasets fit the model (input shapes, label classes) "
      + "and, for training, try a lower learning rate.";
  }
  if (e.includes("unsupported") || e.includes("cannot load") || e.includes("not a model")) {
    return "The model file could not be used as uploaded.";
  }
  return "The compression failed.";
}

// ---------------------------------------------------------------------------- home

function uploadSection(onUploaded) {
  const arch = h("input", { id: "architecture", type: "text", placeholder: "e.g. lenet-300-100 (for bare weights)", list: "archs" });
  const options = h("input", { id: "options", type: "text", placeholder: '{"input_shape": [1, 784]} (TorchScript, exported)' });
  const status = h("div", { class: "upload-status", "aria-live": "polite" });
  const summary = h("div", { class: "summary" });
  const bar = progressSlot();
  const start = async (f) => {
    let opts;
    if (options.value.trim()) {
      try { opts = JSON.parse(options.value); } catch (e) {
        status.replaceChildren(errorBox(new Error("options must be a JSON object")));
        return;
      }
    }
    summary.replaceChildren();
    const model = await runUpload(f, { status, bar, send: (onProgress) =>
      uploadModel(f, { architecture: arch.value.trim() || undefined, options: opts, onProgress }) });
    if (!model) return;
    const inspection = h("div", { id: "inspection" });
    summary.replaceChildren(modelSummary(model), inspection);
    onUploaded(model);
    watchInspection(model, inspection);
  };
  const { zone, input } = fileDrop({ id: "dropzone", inputId: "file", title: "Drop a model file here", onFile: start,
    help: "safetensors, PyTorch state dicts, TorchScript, exported programs, Hugging Face folders (zip)" });
  return h("section", { class: "card", id: "upload" },
    h("h2", {}, "1. Upload a model"),
    h("div", { class: "row" },
      h("div", { class: "field" }, h("label", { for: "architecture" }, "Architecture"), arch),
      h("div", { class: "field" }, h("label", { for: "options" }, "Loader options (JSON)"), options)),
    h("datalist", { id: "archs" }, ["lenet-300-100", "lenet-5", "small-resnet", "mobilenet-mini"].map((a) => h("option", { value: a }))),
    zone, input, bar.element, status, summary);
}

// The worker loads every upload once: show what it will feed the model, or why it cannot, with the fix.
async function watchInspection(model, slot) {
  let m = model;
  slot.replaceChildren(h("p", { class: "muted" }, "Inspecting: a worker loads the model once…"));
  for (let i = 0; i < 1200 && m.inspection_status === "pending"; i++) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    try { m = await api(`/v1/models/${model.id}`); } catch (e) { slot.replaceChildren(errorBox(e)); return; }
  }
  slot.replaceChildren(inspectionView(m));
}

export function inspectionView(m) {
  if (m.inspection_status === "failed") {
    return h("div", { class: "failure", role: "alert" },
      h("strong", {}, "The service cannot use this model as uploaded"),
      h("p", {}, m.inspection_error || ""),
      h("p", { class: "muted" }, "The message says what to send instead; upload again with those options."));
  }
  if (m.inspection_status !== "done") return h("p", { class: "muted" }, "Still inspecting…");
  const used = ((m.summary || {}).inspection || {}).sample_inputs || [];
  return h("div", {},
    h("h3", {}, "Inputs the service will feed this model"),
    h("table", { class: "kv", id: "sample-inputs" }, h("tbody", {}, used.map((u) => h("tr", {},
      h("th", {}, u.name), h("td", {}, `[${u.shape.join(", ")}] ${u.dtype}${u.value !== undefined ? ` = ${u.value}` : ""}`),
      h("td", { class: u.from.includes("GUESSED") ? "warn" : "muted" }, u.from))))));
}

function modelSummary(m) {
  const s = m.summary || {};
  const rows = [
    ["Model", m.id], ["File", m.filename], ["Format", m.format], ["Size", bytes(m.size_bytes)],
    ["Parameters", s.parameters != null ? Number(s.parameters).toLocaleString() : "–"],
    ["Architecture", s.architecture || m.options?.architecture || "–"],
    ["Tensors / layers", s.tensors ?? (s.layers ? s.layers.length : "–")],
    ["sha256", h("code", { class: "hash", title: m.sha256 }, m.sha256)],
  ];
  return h("table", { class: "kv", id: "model-summary" }, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))));
}

async function builderSection() {
  const modelSel = h("select", { id: "model" });
  const recipeSel = h("select", { id: "recipe" });
  const recipeHelp = h("small", { class: "help" });
  const stagesBox = h("div", { class: "stages", id: "stages" });
  const kindSel = h("select", { id: "add-kind" });
  const message = h("div", { "aria-live": "polite" });
  const presetRadio = h("input", { type: "radio", name: "mode", value: "preset", id: "mode-preset", checked: true });
  const customRadio = h("input", { type: "radio", name: "mode", value: "custom", id: "mode-custom" });
  const presetBox = h("div", { class: "preset" },
    h("div", { class: "field" }, h("label", { for: "recipe" }, "Preset recipe"), recipeSel, recipeHelp));
  const stages = [];
  const addStage = (kind, schema) => {
    const form = methodForm(kind, schema);
    const card = h("fieldset", { class: "stage", dataset: { kind } },
      h("legend", {}, `${kind}`),
      h("button", { type: "button", class: "link remove", "aria-label": `remove ${kind} stage`, onclick: () => {
        stages.splice(stages.indexOf(entry), 1);
        card.remove();
      } }, "remove"),
      form.element);
    const entry = { kind, form, card };
    stages.push(entry);
    stagesBox.append(card);
  };
  let methods = {};
  const customBox = h("div", { class: "custom", hidden: true },
    stagesBox,
    h("div", { class: "row add" }, kindSel,
      h("button", { type: "button", id: "add-stage", onclick: () => addStage(kindSel.value, methods[kindSel.value]) }, "Add stage")));
  const sync = () => {
    presetBox.hidden = !presetRadio.checked;
    customBox.hidden = !customRadio.checked;
  };
  presetRadio.addEventListener("change", sync);
  customRadio.addEventListener("change", sync);

  const data = dataSelectors();
  const submit = h("button", { type: "submit", class: "primary", id: "submit-job" }, "Compress");
  const form = h("form", { class: "builder", onsubmit: async (e) => {
    e.preventDefault();
    message.replaceChildren();
    if (!modelSel.value) {
      message.replaceChildren(errorBox(new Error("upload or choose a model first")));
      return;
    }
    const body = { model_id: modelSel.value, data: data.read() };
    try {
      if (presetRadio.checked) body.recipe = recipeSel.value;
      else {
        if (!stages.length) throw new Error("add at least one stage");
        body.pipeline = { stages: stages.map((s) => s.form.read()) };
      }
    } catch (err) {
      message.replaceChildren(errorBox(err));
      return;
    }
    submit.disabled = true;
    try {
      const job = await api("/v1/jobs", { method: "POST", body, headers: { "Idempotency-Key": uuid() } });
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      message.replaceChildren(errorBox(err));
    } finally {
      submit.disabled = false;
    }
  } },
  h("div", { class: "field" }, h("label", { for: "model" }, "Model"), modelSel),
  h("div", { class: "modes" }, h("label", { class: "inline" }, presetRadio, " Preset recipe"),
    h("label", { class: "inline" }, customRadio, " Compose stages")),
  presetBox, customBox, data.element, submit, message);

  const section = h("section", { class: "card", id: "builder" }, h("h2", {}, "2. Compress"), form);
  const fill = async () => {
    try {
      const [models, recipes, m, datasets] = await Promise.all([api("/v1/models?limit=100"), api("/v1/recipes"),
        api("/v1/methods"), api("/v1/datasets?limit=500")]);
      methods = m;
      data.fill(datasets);
      modelSel.replaceChildren(...(models.items.length ? [] : [h("option", { value: "" }, "(upload a model first)")]),
        ...models.items.map((x) => h("option", { value: x.id }, `${x.filename} · ${x.format} · ${bytes(x.size_bytes)} · ${x.id}`)));
      if (lastUploaded) modelSel.value = lastUploaded.id;
      recipeSel.replaceChildren(...recipes.map((r) => h("option", { value: r.name }, r.name)));
      const describe = () => {
        const r = recipes.find((x) => x.name === recipeSel.value);
        recipeHelp.textContent = r ? r.description : "";
      };
      recipeSel.onchange = describe;
      if (recipes.some((r) => r.name === "int8")) recipeSel.value = "int8";
      describe();
      kindSel.replaceChildren(...Object.keys(methods).map((k) => h("option", { value: k }, k)));
    } catch (err) {
      message.replaceChildren(errorBox(err));
    }
  };
  await fill();
  section.refresh = fill;
  return section;
}

function jobRow(job) {
  const detail = job.progress_detail && job.progress_detail.stage === job.stage ? trainingText(job.progress_detail) : "";
  const label = job.status === "running" ? [job.stage, detail].filter(Boolean).join(" · ") : "";
  return h("tr", { "data-job": job.id },
    h("td", {}, h("a", { href: `#/jobs/${job.id}` }, job.id)),
    h("td", {}, badge(job.status)),
    h("td", { class: "wide" }, progressBar(job.progress, label)),
    h("td", {}, job.recipe || "pipeline"),
    h("td", { class: "muted" }, when(job.created_at)));
}

function jobsSection() {
  const filter = h("select", { id: "status-filter", "aria-label": "filter by status" },
    h("option", { value: "" }, "all statuses"), STATUSES.map((s) => h("option", { value: s }, s)));
  const tbody = h("tbody");
  const message = h("div");
  const watchers = new Map();
  let timer = null;
  const render = async () => {
    clearTimeout(timer);
    try {
      const q = filter.value ? `&status=${filter.value}` : "";
      const page = await api(`/v1/jobs?limit=50${q}`);
      tbody.replaceChildren(...page.items.map(jobRow));
      if (!page.items.length) tbody.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No jobs yet.")));
      message.replaceChildren();
      // Live rows: events for up to 3 active jobs (browsers allow ~6 connections per host), polling for the rest.
      const active = page.items.filter((j) => !FINISHED.has(j.status));
      for (const [id, stop] of watchers) if (!active.some((j) => j.id === id)) { stop(); watchers.delete(id); }
      for (const j of active.slice(0, 3)) {
        if (watchers.has(j.id)) continue;
        watchers.set(j.id, watchJob(j.id, (fresh) => {
          const row = tbody.querySelector(`tr[data-job="${fresh.id}"]`);
          if (row) row.replaceWith(jobRow(fresh));
          if (FINISHED.has(fresh.status)) watchers.delete(fresh.id);
        }));
      }
      if (active.length) timer = setTimeout(render, active.length > 3 ? 2000 : 5000);
    } catch (err) {
      message.replaceChildren(errorBox(err));
      timer = setTimeout(render, 5000);
    }
  };
  filter.addEventListener("change", render);
  cleanups.push(() => { clearTimeout(timer); watchers.forEach((stop) => stop()); });
  render();
  const section = h("section", { class: "card", id: "jobs" },
    h("div", { class: "head" }, h("h2", {}, "Jobs"), filter),
    h("div", { class: "scroll" }, h("table", { class: "jobs" },
      h("thead", {}, h("tr", {}, ["Job", "Status", "Progress", "Recipe", "Created"].map((t) => h("th", {}, t)))), tbody)),
    message);
  section.refresh = render;
  return section;
}

// What the tenant stores against its quota: one bar, the kinds beside it.
function usageSection() {
  const section = h("section", { class: "card", id: "usage" }, h("p", { class: "muted" }, "Storage…"));
  api("/v1/usage").then((u) => {
    const kinds = ["models", "datasets", "artifacts"].map((k) => `${k} ${bytes(u[k].bytes)} (${u[k].count})`).join(" · ");
    section.replaceChildren(h("div", { class: "head" }, h("h2", {}, "Storage"),
      h("span", { class: "muted" }, `${bytes(u.used_bytes)} of ${bytes(u.quota_bytes)}`)),
      progressBar(u.used_bytes / u.quota_bytes, kinds),
      h("p", { class: "muted" }, `${u.active_jobs} active job(s)` + (u.artifact_retention_days
        ? ` · artifacts are deleted ${u.artifact_retention_days} days after their job` : "")
        + " · delete jobs and artifacts from their job page, datasets from Datasets"));
  }).catch((err) => section.replaceChildren(errorBox(err)));
  return section;
}

async function home(seq) {
  const builder = await builderSection();
  if (stale(seq)) return;
  const jobs = jobsSection();
  const upload = uploadSection((model) => {
    lastUploaded = model;
    builder.refresh();
  });
  main.replaceChildren(h("div", { class: "grid" }, upload, builder), jobs, usageSection());
}

// ---------------------------------------------------------------------------- job page

function metricsTable(m) {
  const num = (v, d = 4) => (v == null ? "–" : typeof v === "number" ? Number(v.toFixed(d)).toLocaleString() : String(v));
  const rows = [
    ["Size", bytes(m.size_bytes_before), bytes(m.size_bytes_after)],
    ["Compression ratio", "", m.compression_ratio != null ? `×${num(m.compression_ratio, 2)}` : "–"],
    ["Parameters", num(m.parameters_before, 0), num(m.parameters_after, 0)],
    ["Non-zero parameters", "", num(m.nonzero_parameters_after, 0)],
    ["Output cosine similarity", "1", num(m.output_mean_cosine, 6)],
    ["Output max abs difference", "0", num(m.output_max_abs_diff, 6)],
  ];
  const elapsed = m.elapsed_seconds && typeof m.elapsed_seconds === "object"
    ? Object.values(m.elapsed_seconds).reduce((a, b) => a + (Number(b) || 0), 0) : null;
  if (elapsed) rows.push(["Compute time", "", `${elapsed.toFixed(2)} s`]);
  return h("table", { class: "metrics", id: "metrics" },
    h("thead", {}, h("tr", {}, h("th", {}, "Metric"), h("th", {}, "Before"), h("th", {}, "After"))),
    h("tbody", {}, rows.map(([k, a, b]) => h("tr", {}, h("th", {}, k), h("td", {}, a), h("td", {}, b)))));
}

function charts(m) {
  const out = [];
  if (m.size_bytes_before != null && m.size_bytes_after != null) {
    out.push(h("figure", { class: "chart-box", id: "chart-size" }, h("figcaption", {}, "Model size"),
      barChart("model size before and after", [
        { label: "before", value: m.size_bytes_before, text: bytes(m.size_bytes_before), cls: "before" },
        { label: "after", value: m.size_bytes_after, text: bytes(m.size_bytes_after), cls: "after" },
      ])));
  }
  if (m.output_mean_cosine != null) {
    out.push(h("figure", { class: "chart-box", id: "chart-fidelity" }, h("figcaption", {}, "Output fidelity (cosine similarity to the original, 1 = identical)"),
      barChart("output fidelity", [{ label: "cosine", value: m.output_mean_cosine, text: m.output_mean_cosine.toFixed(6), cls: "after" }], { max: 1 })));
  }
  const layers = Array.isArray(m.layers) ? m.layers : [];
  if (layers.some((l) => l.bits_per_weight != null)) {
    out.push(h("figure", { class: "chart-box", id: "chart-bits" }, h("figcaption", {}, "Bits per weight, per layer (32 = float32)"),
      barChart("bits per weight per layer", layers.filter((l) => l.bits_per_weight != null).map((l) => ({
        label: l.name, value: l.bits_per_weight, text: `${l.bits_per_weight} b${l.encoding ? ` · ${l.encoding}` : ""}` })), { max: 32 })));
  }
  if (layers.some((l) => l.density != null && l.density < 1)) {
    out.push(h("figure", { class: "chart-box", id: "chart-density" }, h("figcaption", {}, "Density (share of non-zero weights), per layer"),
      barChart("density per layer", layers.filter((l) => l.density != null).map((l) => ({
        label: l.name, value: l.density, text: `${(l.density * 100).toFixed(1)}%` })), { max: 1 })));
  }
  return out;
}

function artifactsTable(arts) {
  if (!arts.length) return h("p", { class: "muted" }, "No artifacts.");
  const message = h("div");
  return h("div", { class: "scroll" }, message, h("table", { class: "artifacts", id: "artifacts" },
    h("thead", {}, h("tr", {}, ["Name", "Kind", "Size", "sha256", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, arts.map((a) => {
      const state = h("span", { class: "dl-state", "aria-live": "polite" });
      const btn = h("button", { type: "button", class: "download", "data-artifact": a.id, onclick: async () => {
        btn.disabled = true;
        state.textContent = "downloading…";
        try {
          const result = await downloadArtifact(a, (d, t) => { state.textContent = `${Math.round((d / t) * 100)}%`; });
          state.textContent = result === "verified" ? "✓ sha256 verified" : "saved (checksum not verifiable on plain http)";
          state.className = "dl-state ok";
        } catch (err) {
          state.textContent = err.message;
          state.className = "dl-state bad";
        } finally {
          btn.disabled = false;
        }
      } }, "Download");
      const row = h("tr", { "data-artifact": a.id }, h("td", {}, a.name), h("td", {}, a.kind), h("td", {}, bytes(a.size_bytes)),
        h("td", {}, h("code", { class: "hash", title: a.sha256 }, a.sha256)), h("td", { class: "nowrap" }, btn, " ", state, " ",
          confirmDelete({ url: `/v1/artifacts/${encodeURIComponent(a.id)}`, label: `delete ${a.name}`, message,
            onDeleted: () => row.remove() })));
      return row;
    }))));
}

// "data: train ds_… · eval ds_…"
function dataLine(j) {
  const roles = Object.entries(j.data || {});
  if (!roles.length) return null;
  return h("p", { class: "muted", id: "job-data" }, "data: ",
    roles.flatMap(([role, id], i) => [i ? " · " : "", `${role} `, h("code", {}, id)]));
}

async function jobPage(id, seq) {
  const head = h("div", { class: "head" });
  const live = h("div", { class: "live" });
  const details = h("div", { class: "details" });
  main.replaceChildren(h("p", {}, h("a", { href: "#/" }, "← all jobs")),
    h("section", { class: "card", id: "job" }, head, live), details);
  let job;
  try {
    job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
  } catch (err) {
    if (!stale(seq)) main.append(errorBox(err));
    return;
  }
  if (stale(seq)) return;
  const shown = ([k, v]) => k !== "version" && v !== null && !(Array.isArray(v) && !v.length);
  const pipeline = (job.pipeline?.stages || []).map((s) => [s.kind, ...Object.entries(s).filter(([k]) => k !== "kind")
    .filter(shown).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)].join(" ")).join(" → ");
  const cancel = h("button", { type: "button", id: "cancel", onclick: async () => {
    cancel.disabled = true;
    try { showJob(await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" })); } catch (err) { live.append(errorBox(err)); }
  } }, "Cancel");
  let loadedDetails = false;
  const showJob = async (j) => {
    job = j;
    head.replaceChildren(h("h2", {}, "Job ", h("code", {}, j.id)), badge(j.status));
    const bits = [
      h("p", { class: "muted" }, goalLine(j) ?? `${j.recipe ? `recipe ${j.recipe}` : "custom pipeline"}: ${pipeline}`),
      h("p", { class: "muted" }, `model ${j.model_id} · created ${when(j.created_at)}${j.finished_at ? ` · finished ${when(j.finished_at)}` : ""}${j.attempts > 1 ? ` · attempts ${j.attempts}` : ""}`),
      dataLine(j),
      progressBar(j.progress, FINISHED.has(j.status) ? j.status : (j.stage || j.status)),
      trainingLine(j),
    ];
    if (!FINISHED.has(j.status)) bits.push(h("div", { class: "actions" }, cancel, j.cancel_requested ? h("span", { class: "muted" }, " cancel requested…") : null));
    if (FINISHED.has(j.status)) {   // a finished job can go, with its artifacts and their bytes
      const message = h("div");
      bits.push(h("div", { class: "actions", id: "job-delete" }, confirmDelete({
        url: `/v1/jobs/${encodeURIComponent(j.id)}`, label: `delete job ${j.id}`, message, text: "Delete job",
        onDeleted: () => { location.hash = "#/"; } }), message));
    }
    if (j.status === "failed") {
      bits.push(h("div", { class: "failure", id: "failure" }, h("strong", {}, explain(j.error)),
        h("details", {}, h("summary", {}, "technical detail"), h("pre", {}, j.error || "(none)"))));
    }
    if (j.status === "cancelled") bits.push(h("p", { class: "failure" }, "This job was cancelled; it produced no artifacts."));
    if (j.status === "succeeded" && j.quality) bits.push(qualityBox(j.quality));
    live.replaceChildren(...bits.filter(Boolean));
    if (FINISHED.has(j.status) && !loadedDetails) {
      loadedDetails = true;
      await loadDetails(j);
    }
  };
  const loadDetails = async (j) => {
    if (j.status !== "succeeded") return;
    try {
      const [m, arts] = await Promise.all([api(`/v1/jobs/${j.id}/metrics`), api(`/v1/jobs/${j.id}/artifacts`)]);
      const metrics = m.metrics || {};
      if (metrics.analyze) {   // an analyze job: the sensitivity table is the result, no compressed model
        details.replaceChildren(analyzeCard(metrics), h("section", { class: "card" }, h("h2", {}, "Artifacts"),
          artifactsTable(arts)));
        return;
      }
      details.replaceChildren(...[
        h("section", { class: "card" }, h("h2", {}, "Before / after"), metricsTable(metrics)),
        h("section", { class: "card", id: "charts" }, h("h2", {}, "Charts"), h("div", { class: "charts" }, charts(metrics))),
        Array.isArray(metrics.training_log) && metrics.training_log.length ? trainingLogCard(metrics.training_log) : null,
        metrics.goal ? goalCard(metrics.goal, j) : null,
        Array.isArray(metrics.evaluation) && metrics.evaluation.length ? evaluationCard(metrics.evaluation) : null,
        h("section", { class: "card" }, h("h2", {}, "Artifacts"), artifactsTable(arts)),
      ].filter(Boolean));
    } catch (err) {
      details.replaceChildren(errorBox(err));
    }
  };
  await showJob(job);
  if (!FINISHED.has(job.status) && !stale(seq)) cleanups.push(watchJob(job.id, showJob));
}

// ---------------------------------------------------------------------------- shell

function keyControl() {
  const input = h("input", { id: "api-key", type: "password", placeholder: "API key (if the service needs one)", autocomplete: "off", value: apiKey.get() });
  const save = h("button", { type: "button", id: "save-key", onclick: () => { apiKey.set(input.value.trim()); route(); } }, "Save");
  return h("details", { class: "key" }, h("summary", {}, apiKey.get() ? "API key ✓" : "API key"),
    h("div", { class: "row" }, input, save),
    h("small", { class: "help" }, "Stored in this browser only (localStorage); sent as Authorization: Bearer."));
}

async function route() {
  const seq = ++routeSeq;
  cleanup();
  document.getElementById("key-slot").replaceChildren(keyControl());
  const m = location.hash.match(/^#\/jobs\/([\w-]+)/);
  main.setAttribute("aria-busy", "true");
  try {
    if (m) await jobPage(m[1], seq);
    else if (location.hash.startsWith("#/datasets")) main.replaceChildren(...datasetsView());
    else await home(seq);
  } catch (err) {
    if (!stale(seq)) main.replaceChildren(errorBox(err));
  } finally {
    if (!stale(seq)) main.removeAttribute("aria-busy");
  }
}

window.addEventListener("hashchange", route);
route();
export { detailText };
