"""ONNX: export of every job's result, and ONNX uploads compressed in place (ONNX in, ONNX out)."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from compression.coding.container import read_container
from compression.errors import CompressionError
from compression.formats import ModelFormatError, sniff
from compression.formats.onnx_file import rebuild_from_container
from compression.job.runner import run_compression_job
from compression.pipeline import check_pipeline_against_model, parse_pipeline
from tests.helpers import reload_container_and_check

INT8 = {"stages": [{"kind": "quantize", "dtype": "int8"}]}


def _session(data: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 6 * 6, 10)).eval()
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(cnn, (torch.randn(2, 3, 8, 8),), str(path), dynamo=True, external_data=False, verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    return path, cnn


def test_lenet_job_result_exports_to_onnx_and_reloads_in_onnxruntime(lenet_safetensors, tmp_path):
    out = run_compression_job(lenet_safetensors, "safetensors", {"architecture": "lenet-300-100"},
                              parse_pipeline(INT8), tmp_path)
    arts = {a.name: a for a in out.artifacts}
    assert arts["model.onnx"].kind == "onnx"
    assert out.metrics["exports"]["onnx"]["ok"] is True and out.metrics["exports"]["onnx"]["dynamic_axes"]
    assert out.metrics["verification"]["model.onnx"]["output_max_abs_diff"] < 1e-4
    assert json.loads((tmp_path / "report.json").read_text())["metrics"]["exports"]["onnx"]["ok"]

    module = reload_container_and_check(tmp_path / "model.mpz")
    x = torch.randn(3, 1, 28, 28)   # another batch size than the job's sample: the batch axis is dynamic
    sess = _session(arts["model.onnx"].path.read_bytes())
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = module(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_model_that_does_not_export_still_succeeds_with_the_reason(lenet_safetensors, tmp_path, monkeypatch):
    from compression.job import export

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::frobnicate")

    monkeypatch.setattr(export, "write_onnx", broken)
    out = run_compression_job(lenet_safetensors, "safetensors", {"architecture": "lenet-300-100"},
                              parse_pipeline(INT8), tmp_path)
    assert "model.onnx" not in {a.name for a in out.artifacts} and not (tmp_path / "model.onnx").exists()
    assert out.metrics["exports"]["onnx"]["ok"] is False
    assert "frobnicate" in out.metrics["exports"]["onnx"]["reason"]


def test_onnx_upload_is_compressed_in_place(cnn_onnx, tmp_path):
    path, cnn = cnn_onnx
    info = sniff(path)
    assert info.format == "onnx" and info.summary["format"] == "onnx"
    assert info.summary["weight_targets"] == ["0.weight", "3.weight"]
    assert info.summary["inputs"][0]["shape"][0] == "batch"

    out = run_compression_job(path, "onnx", {}, parse_pipeline(INT8), tmp_path)
    arts = {a.name: a.kind for a in out.artifacts}
    assert arts == {"model.mpz": "container", "model.onnx": "onnx", "model.compact.onnx": "onnx-compact",
                    "report.json": "report"}
    m = out.metrics
    assert m["output_mean_cosine"] > 0.999 and m["output_max_abs_diff"] < 0.05
    assert m["compression_ratio"] > 2.5
    assert all(v["output_max_abs_diff"] == 0.0 for k, v in m["verification"].items() if k != "model.compact.onnx")
    assert m["verification"]["model.compact.onnx"]["output_max_abs_diff"] < 1e-5   # same weights, DQ in the graph

    state, manifest = read_container(tmp_path / "model.mpz")
    assert manifest["origin"]["format"] == "onnx" and manifest["decode_requires"] == "program"
    codecs = {t["name"]: t["codec"] for t in manifest["tensors"]}
    assert codecs == {"0.weight": "affine", "0.bias": "raw", "3.weight": "affine", "3.bias": "raw"}

    # ONNX out: the dense file and (container + original graph) give the same outputs, close to the original
    x = torch.randn(5, 3, 8, 8)
    dense = _session((tmp_path / "model.onnx").read_bytes())
    rebuilt = _session(rebuild_from_container(tmp_path / "model.mpz", path).SerializeToString())
    name = dense.get_inputs()[0].name
    (a,), (b,) = dense.run(None, {name: x.numpy()}), rebuilt.run(None, {name: x.numpy()})
    np.testing.assert_array_equal(a, b)
    with torch.no_grad():
        np.testing.assert_allclose(a, cnn(x).numpy(), atol=0.05)


def _with_external_reference(src: Path, dst: Path) -> Path:
    model = onnx.load(str(src))
    init = model.graph.initializer[0]
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    entry = init.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/passwd"
    onnx.save(model, str(dst))
    return dst


def test_external_data_references_are_refused(cnn_onnx, tmp_path):
    bad = _with_external_reference(cnn_onnx[0], tmp_path / "ext.onnx")
    with pytest.raises(ModelFormatError) as err:
        sniff(bad)
    assert err.value.status_code == 422 and "external data" in err.value.message
    with pytest.raises(ModelFormatError, match="external data"):
        run_compression_job(bad, "onnx", {}, parse_pipeline(INT8), tmp_path / "out")


def test_truncated_and_garbage_onnx_are_refused(cnn_onnx, tmp_path):
    data = cnn_onnx[0].read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError) as err:
        sniff(cut)
    assert err.value.status_code == 422 and "ONNX" in err.value.message
    forged = tmp_path / "forged.onnx"   # looks like a ModelProto for three bytes, then noise
    forged.write_bytes(data[:3] + os.urandom(2000))
    with pytest.raises(ModelFormatError) as err:
        sniff(forged)
    assert err.value.status_code == 422
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08" + b"\xff" * 100)
    with pytest.raises(ModelFormatError) as err:
        sniff(junk)
    assert err.value.status_code == 415


def test_the_api_checks_framing_only_and_the_worker_parses(cnn_onnx, tmp_path):
    from compression.formats.inspect import inspect_upload

    path = cnn_onnx[0]
    assert sniff(path, parse_onnx=False).summary["parameters"] is None   # nothing parsed in the API
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelFormatError, match="truncated"):
        sniff(cut, parse_onnx=False)
    found = inspect_upload(path, "onnx", {})
    assert found["summary"] == sniff(path).summary
    seen = found["inspection"]
    assert seen["parameters"] == found["summary"]["parameters"] and not seen["modules_complete"]
    assert set(seen["layers_by_type"]) == {"Conv2d", "Linear"} and seen["output_features"] == 10


def test_stages_that_need_torch_are_refused_for_onnx(cnn_onnx, tmp_path):
    summary = sniff(cnn_onnx[0]).summary
    saliency = parse_pipeline({"stages": [{"kind": "prune", "sparsity": 0.5, "criterion": "saliency"}]})
    problems = check_pipeline_against_model(saliency, summary)
    assert problems and "prune" in problems[0] and "ONNX" in problems[0]
    assert check_pipeline_against_model(parse_pipeline(INT8), summary) == []
    with pytest.raises(CompressionError, match="ONNX"):
        run_compression_job(cnn_onnx[0], "onnx", {}, saliency, tmp_path)


def test_the_text_wrapper_keeps_the_models_mode_through_an_export_that_restores_modes(tmp_path):
    """torch.onnx.export (TorchScript path) puts the module back in its own mode afterwards: a wrapper left in
    training mode would switch the wrapped eval model to training (dropout on)."""
    from torch import nn

    from compression.job.export import _TextModel

    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.drop = nn.Embedding(10, 4), nn.Dropout(0.5)

        def forward(self, input_ids, attention_mask):
            return (self.drop(self.embed(input_ids)) * attention_mask.unsqueeze(-1),)

    model = Text().eval()
    ids, mask = torch.tensor([[1, 2, 3]]), torch.ones(1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_TextModel(model), (ids, mask), str(tmp_path / "t.onnx"), dynamo=False)
    assert not model.training and not model.drop.training
