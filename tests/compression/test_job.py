from __future__ import annotations

import json

import pytest
import torch

from compression.errors import CompressionError
from compression.job.export import load_own_pt2, load_own_torchscript
from compression.job.runner import JobCancelled, JobHooks, run_compression_job
from compression.pipeline import parse_pipeline
from compression.registry import RECIPES

INT8 = parse_pipeline({"stages": RECIPES["int8"].stages})
LENET = {"architecture": "lenet-300-100"}


def test_lenet_safetensors_end_to_end(lenet_safetensors, tmp_path):
    seen = []
    out = run_compression_job(lenet_safetensors, "safetensors", LENET, INT8, tmp_path,
                              JobHooks(on_progress=lambda s, f: seen.append((s, f))))
    kinds = {a.kind: a for a in out.artifacts}
    assert set(kinds) == {"container", "safetensors", "torch-export", "torch-export-compact", "onnx", "onnx-compact",
                          "report"}
    assert all(a.path.parent == tmp_path and a.path.exists() for a in out.artifacts)
    m = out.metrics
    json.dumps(m)
    assert m["size_bytes_before"] == lenet_safetensors.stat().st_size
    assert m["size_bytes_after"] == kinds["container"].path.stat().st_size
    assert m["compression_ratio"] == pytest.approx(m["size_bytes_before"] / m["size_bytes_after"], rel=1e-3)
    assert m["parameters_before"] == m["parameters_after"] == 266610
    assert 0 < m["nonzero_parameters_after"] <= 266610
    assert m["output_mean_cosine"] > 0.99 and 0 < m["output_max_abs_diff"] < 0.1
    assert set(m["verification"]) == {"model.mpz", "model.safetensors", "model.pt2", "model.onnx", "model.compact.onnx",
                                      "model.compact.pt2"}
    assert m["verification"]["model.mpz"]["weights_bitwise_equal"] is True
    fc1 = next(layer for layer in m["layers"] if layer["name"] == "fc1.weight")
    assert fc1["encoding"] == "int8 per_channel symmetric" and 8 < fc1["bits_per_weight"] < 8.1
    assert next(layer for layer in m["layers"] if layer["name"] == "fc1.bias")["bits_per_weight"] == 32
    assert m["seed"] == 0 and "stage 0 quantize" in m["elapsed_seconds"]
    # progress: monotonic, names the stage, ends at 1.0
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and seen[-1] == (None, 1.0)
    assert {"load", "quantize", "export", "verify"} <= {s for s, _ in seen}
    assert json.loads(kinds["report"].path.read_text())["metrics"]["size_bytes_after"] == m["size_bytes_after"]


def test_torchscript_upload(torchscript_file, tiny_model, tmp_path):
    out = run_compression_job(torchscript_file, "torchscript", {"input_shape": [4, 3, 6, 6]}, INT8, tmp_path)
    art = next(a for a in out.artifacts if a.kind == "torchscript")
    x = torch.randn(2, 3, 6, 6)
    reloaded = load_own_torchscript(art.path)
    assert torch.allclose(reloaded(x), tiny_model(x), atol=0.05) and not torch.equal(reloaded(x), tiny_model(x))
    assert out.metrics["parameters_before"] == sum(p.numel() for p in tiny_model.parameters())
    assert out.metrics["output_mean_cosine"] > 0.99
    # torch.export cannot take TorchScript: the legacy exporter writes model.onnx, verified in onnxruntime
    assert out.metrics["exports"]["onnx"]["exporter"] == "torchscript" and "model.onnx" in out.metrics["verification"]


def test_pt2_upload(pt2_file, tiny_model, tmp_path):
    out = run_compression_job(pt2_file, "torch-export", {}, parse_pipeline({"stages": RECIPES["fp16"].stages}),
                              tmp_path)
    art = next(a for a in out.artifacts if a.kind == "torch-export")
    x = torch.randn(2, 3, 6, 6)
    assert torch.allclose(load_own_pt2(art.path)(x), tiny_model(x), atol=1e-2)
    assert out.metrics["verification"]["model.pt2"]["output_max_abs_diff"] == 0.0
    assert 1.9 < out.metrics["compression_ratio"]   # .pt2 upload vs fp16 container
    assert out.metrics["exports"]["onnx"]["ok"]
    assert out.metrics["verification"]["model.onnx"]["output_max_abs_diff"] < 1e-3


@pytest.mark.parametrize("cancel_after", [1, 4])   # before loading; inside the quantize stage
def test_cancellation(lenet_safetensors, tmp_path, cancel_after):
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) >= cancel_after

    with pytest.raises(JobCancelled):
        run_compression_job(lenet_safetensors, "safetensors", LENET, INT8, tmp_path, JobHooks(is_cancelled=cancelled))
    assert not (tmp_path / "model.mpz").exists()


def test_exclude_matching_nothing_fails_the_job(lenet_safetensors, tmp_path):
    spec = parse_pipeline({"stages": [{"kind": "quantize", "dtype": "int8", "exclude": ["conv*"]}]})
    with pytest.raises(CompressionError, match="matches no layer"):
        run_compression_job(lenet_safetensors, "safetensors", LENET, spec, tmp_path)


def test_a_container_that_decodes_differently_fails_verification(lenet_safetensors, tmp_path, monkeypatch):
    import compression.job.verify as verify

    real = verify.read_container

    def corrupt(path):
        state, manifest = real(path)
        state["fc2.weight"] = state["fc2.weight"].clone()
        state["fc2.weight"][0, 0] += 1e-3
        return state, manifest

    monkeypatch.setattr(verify, "read_container", corrupt)
    with pytest.raises(CompressionError, match="not bitwise equal.*fc2.weight"):
        run_compression_job(lenet_safetensors, "safetensors", LENET, INT8, tmp_path)
