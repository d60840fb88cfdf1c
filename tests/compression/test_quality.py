"""Every job ends with a quality verdict (#16 part 1): measured on the most real inputs the job has,
against a default bar or the job's own, and a destroyed model is never a quiet success."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from compression.job.quality import QualitySpec, verdict
from compression.job.runner import run_compression_job
from compression.pipeline import parse_pipeline
from tests.helpers import trained_lenet_folder

LENET = {"architecture": "lenet-300-100"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_lenet_folder(tmp_path_factory.mktemp("quality"), split_seed=0)


def _quality(tmp, stages, files, tag, quality=None):
    pipeline = parse_pipeline({"stages": stages, **({"quality": quality} if quality else {})})
    out = run_compression_job(tmp / "lenet.safetensors", "safetensors", LENET, pipeline, tmp / tag,
                              dataset_files={role: (tmp / f"{role}.npz", "npz") for role in files},
                              measure_latency=False)
    return out.metrics["quality"]


def test_labelled_eval_data_gives_a_top1_verdict(trained):
    kept = _quality(trained, [{"kind": "int8"}], ["eval"], "int8")
    assert kept["metric"] == "top1" and kept["real_inputs"] and kept["inputs"] == "the eval dataset (397 samples)"
    assert kept["baseline"] > 0.9 and kept["drop"] <= 0.01 and kept["passed"] is True, kept
    destroyed = _quality(trained, [{"kind": "prune", "sparsity": 0.98}], ["eval"], "pruned")
    assert destroyed["passed"] is False and destroyed["drop"] > 0.5, destroyed
    assert destroyed["summary"].startswith("NOT kept: top1")


def test_without_labels_real_inputs_give_agreement_and_no_data_says_random(trained):
    on_calibration = _quality(trained, [{"kind": "prune", "sparsity": 0.98}], ["calibration"], "cal")
    assert on_calibration["metric"] == "agreement" and on_calibration["real_inputs"]
    assert on_calibration["inputs"] == "the calibration dataset (256 samples)" and on_calibration["passed"] is False
    on_random = _quality(trained, [{"kind": "int8"}], [], "random")
    assert on_random["metric"] == "cosine" and on_random["real_inputs"] is False
    assert "random inputs" in on_random["inputs"] and "data.eval" in on_random["note"]


def test_the_jobs_own_bar_replaces_the_default(trained):
    strict = _quality(trained, [{"kind": "quantize", "dtype": "int4"}], ["eval"], "strict",
                      quality={"metric": "top1", "min": 0.999})
    assert strict["min"] == 0.999 and strict["passed"] is False
    lenient = _quality(trained, [{"kind": "prune", "sparsity": 0.98}], ["calibration"], "lenient",
                       quality={"metric": "agreement", "min": 0.0})
    assert lenient["passed"] is True


def test_verdict_bars_and_refused_specs():
    before, after = {"top1": 0.9, "cosine": 1.0}, {"top1": 0.885, "cosine": 0.95}
    assert verdict(before, after, "x", real_inputs=True)["passed"] is False          # drop 0.015 > 0.01
    assert verdict(before, after, "x", real_inputs=True, spec=QualitySpec(max_drop=0.02))["passed"] is True
    assert verdict(before, after, "x", real_inputs=True, spec=QualitySpec(metric="cosine"))["passed"] is False
    mse = verdict(None, {"mse": 0.5}, "x", real_inputs=True, spec=QualitySpec(metric="mse", max=0.1))
    assert mse["passed"] is False and mse["max"] == 0.1
    missing = verdict(None, {"cosine": 1.0}, "x", real_inputs=True, spec=QualitySpec(metric="top1", min=0.5))
    assert missing["passed"] is False and "cannot be measured" in missing["reason"]
    for bad in ({"min": 0.9, "max_drop": 0.1}, {"metric": "mse"}, {"metric": "cosine", "max": 1},
                {"max_drop": 2}, {"metric": "bleu"}, {"threshold": 1}):
        with pytest.raises(ValidationError):
            QualitySpec.model_validate(bad)
