"""Jobs with uploaded datasets: loaded by role in the job, per-epoch records, and training that
resumes from its last checkpoint when the job runs again after a crash."""
from __future__ import annotations

import pytest
import torch

from compression.errors import CompressionError, JobCancelled
from compression.job.runner import JobHooks
from compression.job.runner import run_compression_job as _run_job
from compression.job.sources import ModelSource
from compression.pipeline import parse_pipeline
from tests.helpers import digits_npz, make_lenet_safetensors

torch.set_num_threads(1)
OPTIONS = {"architecture": "lenet-300-100"}


def run_compression_job(*args, **kwargs):
    return _run_job(*args, measure_latency=False, **kwargs)


@pytest.fixture
def files(tmp_path):
    model = make_lenet_safetensors(tmp_path / "lenet.safetensors")
    train = digits_npz(tmp_path / "train.npz", n=512)
    return model, {"train": (train, "npz"), "eval": (train, "npz")}


def _pipeline(epochs: int) -> object:
    return parse_pipeline({"stages": [{"kind": "prune", "sparsity": 0.9},
                                      {"kind": "finetune", "epochs": epochs, "patience": None, "lr": 0.003}]})


def test_datasets_by_role_reach_the_stages(files, tmp_path):
    model, data = files
    out = run_compression_job(model, "safetensors", OPTIONS, _pipeline(2), tmp_path / "out", dataset_files=data)
    m = out.metrics
    assert m["datasets"] == {"train": {"samples": 512}, "eval": {"samples": 512}}
    assert [r["epoch"] for r in m["training_log"]] == [1, 2]
    assert all(r["stage_index"] == 1 and "top1" in r["eval"] for r in m["training_log"])
    after_prune, after_finetune = m["evaluation"][1], m["evaluation"][2]
    assert after_prune["kind"] == "prune" and after_finetune["kind"] == "finetune"
    # labelled data: the pruned (untrained) LeNet learns the real digits
    assert after_finetune["top1"] > after_prune["top1"] + 0.2


def test_a_rerun_resumes_training_from_the_last_checkpoint(files, tmp_path):
    model, data = files
    seen: list[dict] = []
    crash = JobHooks(on_log=seen.append, is_cancelled=lambda: len(seen) >= 2)   # dies during epoch 3
    with pytest.raises(JobCancelled):
        run_compression_job(model, "safetensors", OPTIONS, _pipeline(4), tmp_path / "a", crash,
                            dataset_files=data, checkpoint_dir=tmp_path / "ckpt")
    assert [r["epoch"] for r in seen] == [1, 2]
    out = run_compression_job(model, "safetensors", OPTIONS, _pipeline(4), tmp_path / "b", dataset_files=data,
                              checkpoint_dir=tmp_path / "ckpt")
    assert out.metrics["resumed_from_checkpoints"] == ["stage-1-finetune"]
    assert [r["epoch"] for r in out.metrics["training_log"]] == [3, 4]   # epochs 1-2 were not trained again
    assert out.metrics["training_log"][0]["step"] > 2 * 512 // 32


def test_a_dataset_the_model_cannot_run_on_fails_before_any_stage(files, tmp_path):
    model, _ = files
    images = digits_npz(tmp_path / "images.npz", side=8)   # [N, 64] for an MLP over 784 features
    with pytest.raises(CompressionError, match="train dataset: the model does not run on its samples"):
        run_compression_job(model, "safetensors", OPTIONS, _pipeline(1), tmp_path / "out",
                            dataset_files={"train": (images, "npz")})


def test_a_retraining_pipeline_gives_the_same_bytes_twice(files, tmp_path):
    """Seeded jobs are deterministic, training included: the same job via REST yields the same bytes."""
    model, data = files
    pipeline = parse_pipeline({"stages": [{"kind": "prune", "sparsity": 0.8}, {"kind": "finetune", "epochs": 1},
                                          {"kind": "share", "bits": 4}, {"kind": "finetune", "epochs": 1},
                                          {"kind": "huffman"}], "seed": 3})
    first = run_compression_job(model, "safetensors", OPTIONS, pipeline, tmp_path / "a", dataset_files=data)
    second = run_compression_job(model, "safetensors", OPTIONS, pipeline, tmp_path / "b", dataset_files=data)
    assert (tmp_path / "a" / "model.mpz").read_bytes() == (tmp_path / "b" / "model.mpz").read_bytes()
    assert first.metrics["evaluation"] == second.metrics["evaluation"]


def test_an_uploaded_teacher_trains_the_jobs_model(tmp_path):
    """Knowledge distillation into an uploaded student: the job's model learns the other model's outputs."""
    teacher = make_lenet_safetensors(tmp_path / "teacher.safetensors", seed=0)
    student = make_lenet_safetensors(tmp_path / "student.safetensors", seed=1)
    unlabeled = digits_npz(tmp_path / "x.npz", n=512, labels=False)
    source = ModelSource(teacher, "safetensors", {"architecture": "lenet-300-100"})
    pipeline = parse_pipeline({"stages": [{"kind": "finetune", "epochs": 4, "lr": 0.003, "patience": None}]})
    out = run_compression_job(student, "safetensors", OPTIONS, pipeline, tmp_path / "out", teacher=source,
                              dataset_files={"train": (unlabeled, "npz"), "eval": (unlabeled, "npz")})
    before, after = out.metrics["evaluation"][0], out.metrics["evaluation"][-1]
    assert before["agreement"] < 0.5 and after["agreement"] > before["agreement"] + 0.3, (before, after)
    assert after["mse"] < before["mse"] / 4
    assert out.metrics["stages"][0]["result"]["loss"] == "mse" and out.metrics["stages"][0]["result"]["epochs"] == 4


def test_a_teacher_with_other_outputs_is_refused(tmp_path):
    five_classes = tmp_path / "five.ts"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 5))), str(five_classes))
    student = make_lenet_safetensors(tmp_path / "student.safetensors")
    source = ModelSource(five_classes, "torchscript", {"input_shape": [1, 784]})
    with pytest.raises(CompressionError, match=r"teacher's outputs \[8, 5\] do not match the model's \[8, 10\]"):
        run_compression_job(student, "safetensors", OPTIONS, _pipeline(1), tmp_path / "out", teacher=source,
                            dataset_files={"train": (digits_npz(tmp_path / "x.npz"), "npz")})
