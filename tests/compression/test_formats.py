from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from compression.formats import ModelFormatError, load_model, sniff
from compression.formats.limits import SUMMARY_LAYER_CAP

LENET_PARAMS = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


def refused(path: Path, status: int, **kw) -> str:
    with pytest.raises(ModelFormatError) as info:
        sniff(path, **kw)
    assert info.value.status_code == status, info.value.message
    return info.value.message


def test_safetensors_summary(lenet_safetensors):
    info = sniff(lenet_safetensors, architecture="lenet-300-100")
    assert info.format == "safetensors"
    s = info.summary
    assert s["parameters"] == LENET_PARAMS and s["tensors"] == 6 and s["architecture"] == "lenet-300-100"
    assert {"name": "fc1.weight", "shape": [300, 784], "dtype": "float32"} in s["layers"]
    json.dumps(s)


def test_safetensors_needs_a_known_architecture(lenet_safetensors):
    assert "lenet-5" in refused(lenet_safetensors, 422)
    assert "small-resnet" in refused(lenet_safetensors, 422, architecture="resnet-9000")


def test_safetensors_wrong_architecture_names_the_mismatch(lenet_safetensors):
    msg = refused(lenet_safetensors, 422, architecture="lenet-5")
    assert "conv1.weight" in msg and "missing" in msg


def test_small_resnet_counts_parameters_not_buffers(tmp_path):
    from compression.formats.architectures import build_architecture
    model = build_architecture("small-resnet")
    path = tmp_path / "r.safetensors"
    save_file(model.state_dict(), str(path))
    s = sniff(path, architecture="small-resnet").summary
    assert s["parameters"] == sum(p.numel() for p in model.parameters())
    assert s["tensors"] == len(model.state_dict())


def _forged_safetensors(path: Path, header: dict, data: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_safetensors_header_claiming_huge_tensors(tmp_path):
    path = _forged_safetensors(tmp_path / "huge.safetensors", {
        "fc1.weight": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 4 * 10**10]}}, b"\0" * 64)
    assert "file holds only" in refused(path, 422, architecture="lenet-300-100")


def test_safetensors_inconsistent_and_overlapping_entries(tmp_path):
    bad_len = _forged_safetensors(tmp_path / "a.safetensors", {
        "x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 16)
    assert "does not match" in refused(bad_len, 422, architecture="lenet-300-100")
    overlap = _forged_safetensors(tmp_path / "b.safetensors", {
        "x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "y": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, b"\0" * 24)
    assert "overlap" in refused(overlap, 422, architecture="lenet-300-100")


def test_truncated_files(tmp_path, lenet_safetensors, torchscript_file):
    data = lenet_safetensors.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    assert "truncated" in refused(cut, 422, architecture="lenet-300-100")
    cut_zip = tmp_path / "cut.pt"
    cut_zip.write_bytes(torchscript_file.read_bytes()[:-300])   # central directory gone
    refused(cut_zip, 415)


def test_garbage_and_empty_are_415(tmp_path):
    for name, data in (("g.bin", os.urandom(4096).replace(b"\x80", b"\0")), ("e.bin", b""),
                       ("t.txt", b"hello world, not a model")):
        (tmp_path / name).write_bytes(b"\0" + data)
        refused(tmp_path / name, 415)
    plain_zip = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain_zip, "w") as zf:
        zf.writestr("readme.txt", "hi")
    refused(plain_zip, 415)


class _Evil:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_raw_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Evil(str(marker)), protocol=2))
    msg = refused(path, 422, architecture="lenet-300-100")
    assert "pickle" in msg and "state_dict" in msg
    with pytest.raises(ModelFormatError):
        load_model(path, "torch-state-dict", {"architecture": "lenet-300-100"})
    assert not marker.exists()


def test_torch_save_of_objects_is_refused_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"fc1.weight": _Evil(str(marker))}, str(path))
    assert "state_dict" in refused(path, 422, architecture="lenet-300-100")
    assert not marker.exists()


def test_torch_state_dict(tmp_path, lenet_model):
    path = tmp_path / "sd.pt"
    torch.save({"state_dict": lenet_model.state_dict()}, str(path))
    info = sniff(path, architecture="lenet-300-100")
    assert info.format == "torch-state-dict" and info.summary["parameters"] == LENET_PARAMS
    loaded = load_model(path, "torch-state-dict", {"architecture": "lenet-300-100"})
    x = loaded.sample_inputs[0]
    assert torch.equal(loaded.model(x), lenet_model(x))


def test_torchscript_sniff_and_load(torchscript_file, tiny_model):
    info = sniff(torchscript_file)
    assert info.format == "torchscript" and info.summary["parameters"] is None
    assert info.summary["weight_bytes"] >= sum(p.numel() * 4 for p in tiny_model.parameters())
    with pytest.raises(ModelFormatError, match="input_shape"):
        load_model(torchscript_file, "torchscript", {})
    loaded = load_model(torchscript_file, "torchscript", {"input_shape": [4, 3, 6, 6]})
    assert loaded.sample_inputs[0].shape == (4, 3, 6, 6)
    assert torch.allclose(loaded.model(*loaded.sample_inputs), tiny_model(*loaded.sample_inputs))


def test_torchscript_touching_files_is_refused(tmp_path):
    class Reader(torch.nn.Module):
        def forward(self, x):
            return x + torch.from_file("/etc/hostname", size=1)

    path = tmp_path / "reader.pt"
    torch.jit.save(torch.jit.script(Reader()), str(path))
    assert "from_file" in refused(path, 422)


def test_pt2_sniff_and_load(pt2_file, tiny_model):
    info = sniff(pt2_file)
    assert info.format == "torch-export"
    assert info.summary["parameters"] == sum(p.numel() for p in tiny_model.parameters())
    assert [l["name"] for l in info.summary["layers"]] == ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]
    loaded = load_model(pt2_file, "torch-export", {})
    assert loaded.sample_inputs[0].shape == (2, 3, 6, 6)   # the archive's own example inputs
    assert torch.allclose(loaded.model(*loaded.sample_inputs), tiny_model(*loaded.sample_inputs))


def _rewrite_zip(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)
    return dst


@pytest.mark.parametrize("edit, why", [
    (lambda n, d: d.replace(b'"use_pickle": false', b'"use_pickle": true', 1) if n.endswith("weights_config.json") else d,
     "pickled"),
    (lambda n, d: d.replace(b'"guards_code": []', b'"guards_code": ["__import__(\'os\')"]')
     if n.endswith("models/model.json") else d, "guard code"),
    (lambda n, d: d.replace(b"torch.ops.aten.linear.default", b"torch.os.system") if n.endswith("model.json") else d,
     "not allowed"),
])
def test_pt2_with_code_execution_paths_is_refused(tmp_path, pt2_file, edit, why):
    path = _rewrite_zip(pt2_file, tmp_path / "evil.pt2", edit)
    assert why in refused(path, 422)


def test_pt2_with_extra_native_code_is_refused(tmp_path, pt2_file):
    root = zipfile.ZipFile(pt2_file).namelist()[0].split("/")[0]
    path = _rewrite_zip(pt2_file, tmp_path / "aoti.pt2", lambda n, d: d)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(f"{root}/data/aotinductor/model/model.so", b"\x7fELF")
    assert "unexpected member" in refused(path, 422)


def test_pt2_pickled_example_inputs_are_refused(tmp_path, pt2_file):
    marker = tmp_path / "pwned"
    evil = tmp_path / "inputs.pt"
    torch.save((_Evil(str(marker)),), str(evil))
    path = _rewrite_zip(pt2_file, tmp_path / "evil.pt2",
                        lambda n, d: evil.read_bytes() if n.endswith("sample_inputs/model.pt") else d)
    assert "example inputs" in refused(path, 422)
    assert not marker.exists()


def test_summary_layer_list_is_capped(tmp_path):
    # torch-export summary of a wide program: many tensors, capped list, flagged incomplete
    model = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(SUMMARY_LAYER_CAP // 2 + 5)])
    path = tmp_path / "wide.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 2),)), str(path))
    s = sniff(path).summary
    assert s["tensors"] > SUMMARY_LAYER_CAP and len(s["layers"]) == SUMMARY_LAYER_CAP
    assert s["layers_complete"] is False


def test_state_dict_plus_transformers_config_goes_through_a_job(tmp_path):
    """Bare weights + config.json: exported as an HF folder too, the container rebuilt from the config."""
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    from compression.coding.container import load_container_module
    from compression.job.runner import run_compression_job
    from compression.pipeline import parse_pipeline

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in BertModel(cfg).state_dict().items()}, str(path))
    out = run_compression_job(path, "safetensors", {"hf_config": cfg.to_dict()},
                              parse_pipeline({"stages": [{"kind": "quantize", "dtype": "int8"}]}), tmp_path / "out")
    assert {a.name for a in out.artifacts} >= {"model.mpz", "model.safetensors", "model-hf.zip", "model.onnx"}
    assert out.metrics["output_mean_cosine"] > 0.999
    assert type(load_container_module(tmp_path / "out" / "model.mpz")).__name__ == "BertModel"
