"""Goal jobs (compression.search.goal): measure candidates on a selection split, run the chosen one as
an ordinary job whose figures come from data the search never saw, and say whether the goal was met."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from compression.coding.container import write_container
from compression.data.evaluation import evaluate
from compression.data.tensor_data import JobData
from compression.errors import CompressionError, JobCancelled
from compression.formats import load_model
from compression.formats.options import loader_options
from compression.job.runner import load_job_datasets, run_compression_job
from compression.job.sources import DatasetFile
from compression.job.stages import JobHooks, JobOutput, sha256_file, stored_tensors
from compression.pipeline import PipelineSpec
from compression.search.goal import (Candidate, GoalSpec, SearchContext, WeightMix, budget_bytes, candidates_for,
                                     choose, measure, meets_size, pareto, split_data, summary_sentence)
from compression.search.sensitivity import allocate, allocated_stages, layer_sensitivity

SEARCH_SHARE = 0.6   # of the job's progress bar; the chosen pipeline's own job takes the rest


def run_goal_job(model_path: Path, model_format: str, model_options, goal: GoalSpec, out_dir: Path,
                 hooks: JobHooks = JobHooks(), dataset_files: dict[str, tuple[Path, str]] | None = None, *,
                 sample_inputs: DatasetFile | None = None, measure_latency: bool = True) -> JobOutput:
    model_path, options = Path(model_path), loader_options(model_options)
    if model_format == "onnx":
        raise CompressionError("goal jobs take torch formats for now; for an ONNX model submit a recipe or pipeline")
    if not dataset_files:
        raise CompressionError("a goal job needs data to measure candidates on: give data.calibration or data.eval")
    hooks.on_progress("load", 0.0)
    loaded = load_model(model_path, model_format, options, seed=goal.seed, sample_inputs=sample_inputs)
    data = load_job_datasets(dataset_files, loaded)
    selection, selection_name, report, report_name = split_data(data, goal.seed)
    # training inside the search only on data that neither selects nor reports (the train role, beside a
    # calibration or eval role)
    train = data.train if data.train is not None and (data.calibration is not None or data.eval is not None) else None
    ctx = _search_context(model_path, model_format, loaded, goal, selection, train)
    deadline = time.monotonic() + goal.budget_minutes * 60
    rows = _search(goal, ctx, hooks, deadline, has_train=train is not None)
    sensitivity = None
    if not goal.target.structural and (not goal.methods or {"quantize", "huffman"} <= set(goal.methods)):
        hooks.on_progress("search: per-layer sensitivity", SEARCH_SHARE * 0.85)
        sensitivity, allocated = _allocated(goal, ctx, loaded, selection, rows, deadline)
        if allocated is not None:
            rows.append(allocated)
    measured = [r for r in rows if "error" not in r]
    if not measured:
        raise CompressionError("no candidate applies to this model: " + "; ".join(f"{r['name']}: {r['error']}"
                                                                                   for r in rows)[:800])
    chosen = choose(measured, goal.target)
    final_hooks = JobHooks(on_progress=lambda stage, f: hooks.on_progress(stage, SEARCH_SHARE + (1 - SEARCH_SHARE) * f),
                           is_cancelled=hooks.is_cancelled, on_log=hooks.on_log)
    pipeline = PipelineSpec.model_validate({"stages": chosen["stages"], "seed": goal.seed,
                                            "quality": goal.constraint.model_dump(exclude_none=True)})
    # the chosen pipeline's job: calibration from the selection split only, its verdict on the report data
    output = run_compression_job(model_path, model_format, options, pipeline, out_dir, final_hooks,
                                 data=JobData(calibration=selection, eval=report, train=train),
                                 sample_inputs=sample_inputs, measure_latency=measure_latency)
    result = _goal_result(output.metrics, chosen, goal, ctx.macs_before, report_name,
                          lambda: _final_speedup(out_dir, model_path, loaded, goal))
    output.metrics["goal"] = {
        **result, "selected_on": selection_name, "reported_on": report_name, "candidates": rows,
        "pareto": pareto(measured), **({"sensitivity": sensitivity} if sensitivity else {}),
    }
    report_file = out_dir / "report.json"
    body = json.loads(report_file.read_text())
    body["metrics"] = output.metrics
    report_file.write_text(json.dumps(body, indent=1, sort_keys=True))
    return output


def _search_context(model_path: Path, model_format: str, loaded, goal: GoalSpec, selection, train) -> SearchContext:
    """What every candidate is measured with: the selection split, the original's figures, the container sizer."""
    origin = {"format": model_format, "architecture": loaded.architecture, "sha256": sha256_file(model_path),
              "size_bytes": model_path.stat().st_size, **({"hf_config": loaded.hf.config} if loaded.hf else {})}

    def container_bytes(path: Path, state, spec) -> int:   # the same container the job would write
        _, encodings = stored_tensors(state)
        return write_container(path, encodings, origin=origin, pipeline=spec.model_dump(mode="json"),
                               structure=state.structure)

    macs_before = _macs(loaded) if goal.target.macs_ratio is not None else None
    if goal.target.macs_ratio is not None and macs_before is None:
        raise CompressionError("torch's flop counter finds no multiply-accumulates in this model's forward pass: "
                               "give a ratio or max_bytes target instead")
    return SearchContext(loaded.model, loaded.probe, loaded.sample_inputs,
                         list(selection.take(slice(0, 512)).batches(32)), selection,
                         evaluate(loaded.model, loaded.model, selection, loaded.probe),
                         loaded.weights_bytes or origin["size_bytes"], container_bytes,
                         data=JobData(train=train) if train is not None else None, macs_before=macs_before)


def _goal_result(metrics: dict, chosen: dict, goal: GoalSpec, macs_before: int | None, report_name: str,
                 final_speedup) -> dict:
    """The chosen pipeline's own figures (from its job, on the report data) and whether they meet the goal."""
    quality = metrics["quality"]
    if "inputs" in quality:   # the final job saw the report data as its eval role; name it as the user knows it
        quality["summary"] = quality.get("summary", "").replace(quality["inputs"], report_name)
        quality["inputs"] = report_name
    final = {"name": chosen["name"], "bytes": metrics["size_bytes_after"], "ratio": metrics["compression_ratio"]}
    if macs_before is not None:   # the chosen pipeline's own model, counted as the candidates were
        final["macs_ratio"] = chosen.get("macs_ratio")
        if metrics.get("macs_before") and metrics.get("macs_after"):
            final["macs_ratio"] = round(metrics["macs_before"] / metrics["macs_after"], 3)
    if goal.target.speedup is not None:   # measured again apart from the search (its figures were selected on)
        final["speedup"] = final_speedup()
    final["goal_met"] = meets_size(goal.target, final["ratio"], final["bytes"], final.get("macs_ratio"),
                                   final.get("speedup")) and bool(quality["passed"])
    return {"spec": goal.model_dump(mode="json", exclude_none=True), "goal_met": final["goal_met"],
            "summary": summary_sentence(goal, final, quality, report_name), "chosen": chosen["name"],
            "result": final}


def _allocated(goal: GoalSpec, ctx: SearchContext, loaded, selection, rows: list[dict],
               deadline: float) -> tuple[dict | None, dict | None]:
    """Per-layer sensitivity on (up to 256 samples of) the selection split, the allocation that fits the
    target, and that allocation measured end to end like any candidate."""
    metric = goal.constraint.metric or ("top1" if selection.labels is not None
                                        else "agreement" if loaded.probe is None else "cosine")
    subset = selection.take(slice(0, 256))
    try:
        sensitivity = layer_sensitivity(loaded.model, loaded.probe, subset, metric, deadline=deadline)
    except Exception as exc:   # e.g. a model whose weights are not plain parameters
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}, None
    if not sensitivity["layers"] or not sensitivity["complete"]:
        return sensitivity, None
    budget = budget_bytes(goal.target, ctx.size_before)
    int8 = next((r for r in rows if r["name"] == "int8" and "bytes" in r), None)   # evaluated or far over the size
    other = max(int8["bytes"] - sum(row["bytes"]["int8"] for row in sensitivity["layers"]), 0) if int8 else 0
    choice = allocate(sensitivity, budget, other)
    candidate = Candidate("allocated-int8/4/3-g64-huffman", allocated_stages(choice))
    try:
        row = measure(candidate, ctx, goal)
    except Exception as exc:
        return sensitivity, {"name": candidate.name, "error": f"{type(exc).__name__}: {exc}"[:300]}
    row["allocation"] = {width: sum(1 for w in choice.values() if w == width) for width in sorted(set(choice.values()))}
    return sensitivity, row


def _final_speedup(out_dir: Path, model_path: Path, loaded, goal: GoalSpec) -> float | None:
    """The chosen job's model rebuilt from its container, timed beside the upload (a fresh measurement)."""
    from compression.coding.container import load_container_module
    from compression.search.goal import measured_speedup

    try:
        model = load_container_module(out_dir / "model.mpz", program=model_path)
    except Exception:   # not rebuildable here: the goal is then reported missed rather than guessed
        return None
    return measured_speedup(loaded.model, model.eval(), loaded.sample_inputs, goal.target.speed_batch, loaded.probe,
                            budget_s=2.0)


def _macs(loaded) -> int | None:
    from compression.job.metrics import count_macs
    from compression.search.goal import _call

    try:
        with torch.no_grad():
            return count_macs(loaded.model, loaded.sample_inputs, _call(loaded.probe)) or None
    except Exception:   # a program the flop counter cannot trace: the candidates say so one by one
        return None


def _search(goal: GoalSpec, ctx: SearchContext, hooks: JobHooks, deadline: float, has_train: bool) -> list[dict]:
    # the selection split calibrates data-driven candidates; training ones train on the train role only
    mix = None
    if not goal.target.structural and (not goal.methods or {"gptq", "huffman"} <= set(goal.methods)):
        hooks.on_progress("search: weights by kind", 0.0)   # for the GPTQ widths solved from the size target
        mix = WeightMix.of(ctx.model, ctx.calibration, ctx.size_before)
    candidates = candidates_for(goal, has_calibration=True, has_train=has_train, mix=mix)
    rows = []
    for i, candidate in enumerate(candidates):
        if hooks.is_cancelled():
            raise JobCancelled()
        if time.monotonic() > deadline:
            rows.append({"name": candidate.name, "error": f"not measured: the {goal.budget_minutes:g}-minute "
                                                          "search budget ran out"})
            continue
        hooks.on_progress(f"search {i + 1}/{len(candidates)} {candidate.name}", SEARCH_SHARE * i / len(candidates))
        try:
            rows.append(measure(candidate, ctx, goal))
        except JobCancelled:
            raise
        except Exception as exc:   # a candidate that does not apply (no layer of its kind, ...) is recorded
            rows.append({"name": candidate.name, "error": f"{type(exc).__name__}: {exc}"[:300]})
    far = [r for r in rows if r.get("far_from_size")]
    if far and all("error" in r for r in rows):   # all far over the size: the smallest is what choose() would take
        smallest = min(far, key=lambda r: r["bytes"])
        name = smallest["name"]
        rows[rows.index(smallest)] = measure(next(c for c in candidates if c.name == name), ctx, goal,
                                             evaluate_far=True)
    return rows
