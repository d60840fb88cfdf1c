// Training stages on the job page: the live epoch line, the per-epoch log with a loss chart,
// and the evaluation (task metrics on the eval data before and after every stage).
import { lineChart } from "./charts.js";
import { h } from "./dom.js";

// 0.0123, 1.23, 123, 1.20e-5: three significant digits.
export function num(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return v == null ? "–" : String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return String(Number(v.toPrecision(3)));
}

const score = (v) => (typeof v === "number" ? String(Number(v.toFixed(4))) : "–");

// "epoch 3/10 · step 420 · loss 0.0123 · eval score 0.95" from a training record (progress_detail).
export function trainingText(d) {
  if (!d) return "";
  const parts = [];
  if (d.epoch != null) parts.push(`epoch ${d.epoch}${d.epochs != null ? `/${d.epochs}` : ""}`);
  if (d.step != null) parts.push(`step ${d.step}`);
  if (d.loss != null) parts.push(`loss ${num(d.loss)}`);
  if (d.eval && d.eval.score != null) parts.push(`eval score ${score(d.eval.score)}`);
  return parts.join(" · ");
}

// The line under the progress bar; `current` is false once the job has moved past that stage.
export function trainingLine(job) {
  const d = job.progress_detail;
  const text = trainingText(d);
  if (!text) return null;
  const current = job.status === "running" && job.stage === d.stage;
  const where = d.stage ? `${d.stage}${d.stage_index != null ? ` (stage ${d.stage_index})` : ""}` : "training";
  return h("p", { class: "train-detail", id: "train-detail" },
    h("span", { class: "muted" }, current ? `${where}: ` : `last ${where} epoch: `), text);
}

export function table(id, columns, rows) {
  return h("div", { class: "scroll" }, h("table", { class: "metrics", id },
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", {}, title)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(r))))))));
}

const has = (rows, key) => rows.some((r) => r[key] != null);

// metrics.training_log: [{stage_index, stage, epoch, epochs, step, loss, eval?}]
export function trainingLogCard(log) {
  const withEval = log.some((r) => r.eval);
  const columns = [
    ["Stage", (r) => `${r.stage_index ?? ""} ${r.stage ?? ""}`.trim()],
    ["Epoch", (r) => (r.epochs != null ? `${r.epoch}/${r.epochs}` : r.epoch)],
    ["Step", (r) => r.step ?? "–"],
    ["Loss", (r) => num(r.loss)],
    ...(withEval ? [["Eval score", (r) => score(r.eval?.score)]] : []),
    ...(log.some((r) => r.eval?.top1 != null) ? [["Eval top-1", (r) => score(r.eval?.top1)]] : []),
  ];
  const stages = new Set(log.map((r) => r.stage_index));
  const points = log.filter((r) => typeof r.loss === "number")
    .map((r) => ({ label: stages.size > 1 ? `${r.stage_index}:${r.epoch}` : `${r.epoch}`, value: r.loss }));
  const chart = points.length > 1 ? h("figure", { class: "chart-box", id: "chart-loss" },
    h("figcaption", {}, `Training loss per epoch${stages.size > 1 ? " (stage:epoch)" : ""}`),
    lineChart("training loss per epoch", points, { format: num })) : null;
  return h("section", { class: "card", id: "training" }, h("h2", {}, "Training"),
    table("training-log", columns, log), chart);
}

// metrics.evaluation: [{after_stage (null: the original), kind, score, top1?, top5?, cosine?, agreement?, mse?, samples}]
export function evaluationCard(rows) {
  const base = rows.find((r) => r.after_stage == null)?.score;
  const optional = [["top1", "Top-1"], ["top5", "Top-5"], ["cosine", "Cosine"], ["agreement", "Agreement"]]
    .filter(([k]) => has(rows, k)).map(([k, title]) => [title, (r) => score(r[k])]);
  const columns = [
    ["After", (r) => (r.after_stage == null ? "original (before compression)" : `stage ${r.after_stage} · ${r.kind ?? ""}`)],
    ["Score", (r) => score(r.score)],
    ...(base != null ? [["Δ vs original", (r) => (r.after_stage == null || r.score == null ? "" : signed(r.score - base))]] : []),
    ...optional,
    ...(has(rows, "mse") ? [["MSE", (r) => num(r.mse)]] : []),
    ...(has(rows, "samples") ? [["Samples", (r) => r.samples ?? "–"]] : []),
  ];
  return h("section", { class: "card", id: "evaluation" }, h("h2", {}, "Evaluation"),
    h("p", { class: "help" }, "On the job's eval data; the score is top-1 accuracy with labels, else cosine similarity "
      + "to the original model's outputs."),
    table("evaluation-table", columns, rows));
}

function signed(v) {
  const s = score(v);
  return v > 0 ? `+${s}` : s;
}
