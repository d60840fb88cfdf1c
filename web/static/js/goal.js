// A goal job's result: the outcome in one sentence, every measured candidate, the Pareto front.
import { api } from "./api.js";
import { scatterChart } from "./charts.js";
import { bytes, h, uuid } from "./dom.js";
import { table } from "./training.js";
import { errorBox } from "./widgets.js";

export function goalLine(job) {
  const g = job.pipeline?.goal;
  if (!g) return null;
  const target = g.target.ratio != null ? `${g.target.ratio}× smaller`
    : g.target.macs_ratio != null ? `${g.target.macs_ratio}× fewer MACs`
    : g.target.speedup != null ? `${g.target.speedup}× faster at batch ${g.target.batch ?? 32}` : `at most ${bytes(g.target.max_bytes)}`;
  const c = g.constraint || {};
  const bar = c.min != null ? `${c.metric || "quality"} ≥ ${c.min}` : c.max_drop != null ? `${c.metric || "quality"} drop ≤ ${c.max_drop}`
    : c.max != null ? `${c.metric} ≤ ${c.max}` : "the default quality bar";
  return `goal: ${target} at ${bar}`;
}

// Any measured candidate becomes artifacts without re-running the search: its stages as a pipeline job.
function buildButton(job, goal, candidate, message) {
  const button = h("button", { type: "button", class: "build-candidate", "data-candidate": candidate.name, onclick: async () => {
    button.disabled = true;
    try {
      const body = { model_id: job.model_id, pipeline: { stages: candidate.stages, seed: goal.spec.seed ?? 0,
        quality: goal.spec.constraint }, ...(job.data ? { data: job.data } : {}) };
      const made = await api("/v1/jobs", { method: "POST", body, headers: { "Idempotency-Key": uuid() } });
      location.hash = `#/jobs/${made.id}`;
    } catch (err) {
      button.disabled = false;
      message.replaceChildren(errorBox(err));
    }
  } }, candidate.name === goal.chosen ? "built" : "Build");
  if (candidate.name === goal.chosen) button.disabled = true;
  return button;
}

export function goalCard(goal, job) {
  const measured = goal.candidates.filter((c) => !c.error);
  const message = h("div", {});
  const mark = (c) => (c.name === goal.chosen ? "chosen" : goal.pareto.includes(c.name) ? "front" : "");
  const columns = [
    ["Candidate", (c) => `${c.name}${c.name === goal.chosen ? " (chosen)" : goal.pareto.includes(c.name) ? " (front)" : ""}`],
    ["Bytes", (c) => bytes(c.bytes)],
    ["Ratio", (c) => `${c.ratio.toFixed(2)}×`],
    ...(measured.some((c) => c.macs_ratio != null) ? [["Fewer MACs", (c) => `${c.macs_ratio.toFixed(2)}×`]] : []),
    ...(measured.some((c) => c.speedup != null) ? [["Speedup", (c) => `${c.speedup.toFixed(2)}×`]] : []),
    [measured[0]?.metric ?? "Metric", (c) => c.metric_value.toFixed(4)],
    [measured.some((c) => c.speedup != null) ? "Speed target" : measured.some((c) => c.macs_ratio != null) ? "MAC target"
      : "Size target", (c) => (c.meets_size ? "met" : "–")],
    ["Quality bar", (c) => (c.passed ? "met" : "–")],
    ["Artifacts", (c) => buildButton(job, goal, c, message)],
  ];
  return h("section", { class: "card", id: "goal" }, h("h2", {}, "Goal search"),
    h("div", { class: goal.goal_met ? "verdict kept" : "failure verdict", id: "goal-summary" },
      h("strong", {}, goal.goal_met ? "Goal met" : "Goal missed"), h("p", {}, goal.summary)),
    h("p", { class: "help" }, `Candidates measured on ${goal.selected_on}; the result reported on ${goal.reported_on}.`),
    scatterChart("candidates: size ratio vs quality", measured.map((c) => ({ x: c.ratio, y: c.metric_value, label: c.name,
      cls: mark(c) })), { xLabel: "smaller →", yLabel: measured[0]?.metric ?? "", format: (v) => v.toFixed(3) }),
    table("goal-table", columns, measured), message,
    goal.sensitivity?.layers?.length ? sensitivityTable(goal.sensitivity) : null,
    goal.candidates.some((c) => c.error) ? h("p", { class: "muted" }, "Not measured: "
      + goal.candidates.filter((c) => c.error).map((c) => `${c.name} (${c.error})`).join("; ")) : null);
}

// An analyze job's result: which layers break, before choosing a recipe.
export function analyzeCard(metrics) {
  const a = metrics.analyze;
  return h("section", { class: "card", id: "analyze" }, h("h2", {}, "Per-layer sensitivity"),
    h("p", { id: "analyze-summary" }, a.summary),
    h("p", { class: "help" }, `Measured on ${a.samples} samples of the ${a.data} data in ${a.seconds} s. `
      + "Layers with a small loss at int4/int3 are safe to store narrow; a goal job allocates widths this way."),
    sensitivityTable(metrics.sensitivity));
}

// Which layer breaks: each layer alone at 8/4/3 bits, the measured loss of the metric, darker = worse.
function sensitivityTable(sens) {
  const widths = ["int8", "int4", "int3"];
  const worst = Math.max(1e-9, ...sens.layers.flatMap((r) => widths.map((w) => r.loss[w] ?? 0)));
  const cell = (r, w) => {
    const loss = r.loss[w] ?? 0;
    const shade = Math.round(255 - 155 * Math.min(1, Math.max(0, loss) / worst));
    return h("td", { class: "heat", style: `background: rgb(255, ${shade}, ${shade})`, title: `${bytes(r.bytes[w])}` },
      loss.toFixed(4));
  };
  return h("div", {},
    h("h3", {}, `Per-layer sensitivity (${sens.metric} loss, one layer at a time, groups of ${sens.group_size})`),
    h("div", { class: "scroll" }, h("table", { class: "metrics", id: "sensitivity-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Layer"), h("th", {}, "Type"), ...widths.map((w) => h("th", {}, w)))),
      h("tbody", {}, sens.layers.map((r) => h("tr", {}, h("td", {}, r.tensor), h("td", {}, r.type),
        ...widths.map((w) => cell(r, w))))))));
}
