"""The quality verdict every job ends with: did the compressed model keep what the upload did?

One measure, chosen from the best evidence the job has: the task metric on labelled eval data; else
agreement (classifiers) or cosine (embeddings, other outputs) against the uploaded model on real
inputs (eval, calibration or train data, the sample dataset, or text from the model's tokenizer);
random inputs only when nothing real exists, and the verdict then says so plainly. A threshold
(defaults below, or the job's `quality` spec) makes it `passed` true or false.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Metric = Literal["top1", "top5", "agreement", "cosine", "mse"]
HIGHER_IS_BETTER = {"top1", "top5", "agreement", "cosine"}
# What most users accept without being asked: one point of top-1 on labelled data; otherwise the
# compressed model picks the same class on 97 % of real inputs, or its outputs keep cosine 0.97.
DEFAULT_MAX_DROP = {"top1": 0.01, "top5": 0.01}
DEFAULT_MIN = {"agreement": 0.97, "cosine": 0.97}
RANDOM_NOTE = ("only random inputs were available, so this verdict says little about real data: upload "
               "an eval or calibration dataset (data.eval / data.calibration) or give the model "
               "options.sample_dataset")


class QualitySpec(BaseModel):
    """The job's own bar (optional): a metric and one of min / max / max_drop."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Metric | None = Field(None, description="default: top1 with labelled eval data, else agreement for "
                                                    "classifiers, else cosine")
    min: float | None = Field(None, description="the metric must be at least this (top1, top5, agreement, cosine)")
    max: float | None = Field(None, ge=0, description="the metric must be at most this (mse)")
    max_drop: float | None = Field(None, ge=0, le=1, description="top1/top5/agreement/cosine may fall at most this "
                                                                 "much below the uploaded model's")

    @model_validator(mode="after")
    def _one_bar(self) -> "QualitySpec":
        given = [name for name in ("min", "max", "max_drop") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of min, max or max_drop, not {' and '.join(given)}")
        if self.max is not None and self.metric != "mse":
            raise ValueError("max applies to metric 'mse' (lower is better); use min or max_drop")
        if self.metric == "mse" and self.max is None:
            raise ValueError("metric 'mse' needs max (lower is better)")
        return self


def _choose_metric(spec: QualitySpec, after: dict) -> str:
    if spec.metric is not None:
        return spec.metric
    if "top1" in after:
        return "top1"
    return "agreement" if "agreement" in after else "cosine"


def verdict(before: dict | None, after: dict, source: str, *, real_inputs: bool,
            spec: QualitySpec | None = None) -> dict:
    """`before` / `after`: evaluation metrics (data.evaluation.compare) of the uploaded and the compressed
    model on the same inputs (`before` None: the uploaded model is the reference, cosine 1 by definition);
    `source`: which inputs, in words. -> the job's `quality` record."""
    spec = spec or QualitySpec()
    metric = _choose_metric(spec, after)
    if metric not in after:
        return {"metric": metric, "passed": False, "inputs": source, "real_inputs": real_inputs,
                "reason": f"{metric} cannot be measured on these inputs ({source}); "
                          f"measurable: {', '.join(k for k in after if k in HIGHER_IS_BETTER or k == 'mse')}"}
    value = float(after[metric])
    baseline = float(before[metric]) if before and metric in before else \
        (1.0 if metric in ("agreement", "cosine") else None)
    record: dict = {"metric": metric, "value": round(value, 6), "inputs": source, "real_inputs": real_inputs}
    if baseline is not None:
        record["baseline"] = round(baseline, 6)
    if metric == "mse":   # only when asked for, and then with its max
        record.update(max=spec.max, passed=value <= spec.max)
    elif spec.min is not None or (spec.max_drop is None and metric in DEFAULT_MIN):
        floor = spec.min if spec.min is not None else DEFAULT_MIN[metric]
        record.update(min=floor, passed=value >= floor)
    else:
        drop = spec.max_drop if spec.max_drop is not None else DEFAULT_MAX_DROP.get(metric, 0.01)
        if baseline is None:
            record.update(max_drop=drop, passed=False, reason="no baseline to measure a drop against")
            return record
        record.update(max_drop=drop, drop=round(baseline - value, 6), passed=baseline - value <= drop + 1e-12)
    record["summary"] = _sentence(record)
    if not real_inputs:
        record["note"] = RANDOM_NOTE
    return record


def _sentence(r: dict) -> str:
    what = f"{r['metric']} {r['value']:.4g}"
    if "drop" in r:
        bar = f"a drop of {r['drop']:.4g} from {r['baseline']:.4g} (allowed {r['max_drop']:.4g})"
    elif "min" in r:
        bar = f"at least {r['min']:.4g} required"
    else:
        bar = f"at most {r['max']:.4g} allowed"
    return f"{'kept' if r['passed'] else 'NOT kept'}: {what} on {r['inputs']}; {bar}"


_ORIGINS = {"dataset": "the first samples of the model's sample dataset",
            "tokenizer": "sample sentences encoded by the model's tokenizer",
            "program": "the example inputs stored in the uploaded program (real only if it was exported with "
                       "real data)",
            "random": "random inputs"}
REAL_SAMPLES = 512   # enough for a stable agreement/cosine, cheap next to the job


def job_quality(spec: QualitySpec | None, evaluation: list[dict], data, reference_model, compressed, loaded,
                reference_out, compressed_out) -> dict:
    """The verdict from the best evidence the job has (see the module docstring). `evaluation`: the runner's
    before/after-stage records on eval data; `data`: the job's JobData or None; `reference_model`: the
    uploaded model (or the uploaded teacher); `reference_out` / `compressed_out`: outputs on the example
    inputs, of the model as uploaded and as compressed."""
    import torch

    from compression.data.evaluation import evaluate

    if evaluation:
        eval_data = data.eval
        return verdict(evaluation[0], evaluation[-1], f"the eval dataset ({len(eval_data)} samples)",
                       real_inputs=True, spec=spec)
    for role in ("calibration", "train"):
        found = getattr(data, role, None) if data is not None else None
        if found is not None and len(found):
            subset = found.take(slice(0, REAL_SAMPLES))
            with torch.no_grad():
                before = evaluate(reference_model, reference_model, subset, loaded.probe)
                after = evaluate(compressed, reference_model, subset, loaded.probe)
            note = "" if role == "calibration" else ", also used for training"
            return verdict(before, after, f"the {role} dataset ({len(subset)} samples{note})",
                           real_inputs=True, spec=spec)
    return outputs_quality(spec, reference_out, compressed_out, classifier=loaded.probe is None,
                           origin=loaded.inputs_origin)


def outputs_quality(spec: QualitySpec | None, reference_out, compressed_out, *, classifier: bool,
                    origin: str = "random") -> dict:
    """The verdict from outputs on example inputs alone (ONNX jobs: the feeds)."""
    from compression.data.evaluation import compare

    real = origin in ("dataset", "tokenizer")
    # argmax agreement on a handful of random inputs flips on noise: there cosine is the steadier default
    classifier = (classifier and real) or (spec is not None and spec.metric == "agreement")
    after = compare(compressed_out.double(), reference_out.double(), None, classifier=classifier)
    source = f"{_ORIGINS.get(origin, origin)} ({int(compressed_out.shape[0])})"
    return verdict(None, after, source, real_inputs=real, spec=spec)
