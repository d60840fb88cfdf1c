from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from compression.formats.architectures import build_architecture

from compression.coding.container import ContainerError, load_container_module, read_container, write_container
from compression.coding.encoding import Encoded, Part, raw
from compression.job.runner import run_compression_job
from compression.stage import CompressionState
from compression.pipeline import parse_pipeline
from compression.registry import run_stage

LENET = {"architecture": "lenet-300-100"}


def _job(path: Path, out: Path, stages: list[dict], fmt="safetensors", options=LENET, seed=0):
    return run_compression_job(path, fmt, options, parse_pipeline({"stages": stages, "seed": seed}), out)


def _container(output) -> Path:
    return next(a.path for a in output.artifacts if a.kind == "container")


@pytest.mark.parametrize("stage", [
    {"kind": "quantize", "dtype": "int8"},
    {"kind": "quantize", "dtype": "int4", "symmetric": False},
    {"kind": "quantize", "dtype": "int4", "granularity": "per_tensor"},
    {"kind": "quantize", "dtype": "bf16"},
])
def test_round_trip_is_bitwise_exact(stage, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.BatchNorm2d(5), torch.nn.Flatten(),
                                torch.nn.Linear(5 * 3 * 3, 7))   # odd element counts for int4 packing
    state = CompressionState(model)
    run_stage(parse_pipeline({"stages": [stage]}).stages[0], state)
    weights = model.state_dict()
    encodings = {k: state.encodings.get(k) or raw(v) for k, v in weights.items()}
    path = tmp_path / "m.mpz"
    write_container(path, encodings, origin={"format": "test", "architecture": None}, pipeline={})
    decoded, manifest = read_container(path)
    assert list(decoded) == list(weights)
    for name, tensor in weights.items():
        assert decoded[name].dtype == tensor.dtype
        assert torch.equal(decoded[name].view(-1).view(torch.uint8) if tensor.is_floating_point() else decoded[name],
                           tensor.view(-1).view(torch.uint8) if tensor.is_floating_point() else tensor), name
    assert manifest["format_version"] == 2 and manifest["decode_requires"] == "program"


def test_container_is_about_4x_smaller_for_int8_and_2x_for_fp16(lenet_safetensors, tmp_path):
    fp32 = lenet_safetensors.stat().st_size
    int8 = _job(lenet_safetensors, tmp_path / "a", [{"kind": "quantize", "dtype": "int8"}])
    fp16 = _job(lenet_safetensors, tmp_path / "b", [{"kind": "quantize", "dtype": "fp16"}])
    int4 = _job(lenet_safetensors, tmp_path / "c", [{"kind": "quantize", "dtype": "int4"}])
    assert 3.8 < fp32 / _container(int8).stat().st_size <= 4.0
    assert 1.95 < fp32 / _container(fp16).stat().st_size <= 2.0
    assert 7.0 < fp32 / _container(int4).stat().st_size <= 8.0
    assert int8.metrics["size_bytes_after"] == _container(int8).stat().st_size


def test_same_input_and_spec_give_the_same_bytes(lenet_safetensors, tmp_path):
    stages = [{"kind": "quantize", "dtype": "int4", "symmetric": False}]
    a = _container(_job(lenet_safetensors, tmp_path / "a", stages)).read_bytes()
    b = _container(_job(lenet_safetensors, tmp_path / "b", stages)).read_bytes()
    assert a == b
    c = _container(_job(lenet_safetensors, tmp_path / "c", [{"kind": "quantize", "dtype": "int8"}])).read_bytes()
    assert a != c


def test_rebuilds_the_architecture_from_the_container_alone(lenet_safetensors, tmp_path):
    out = _job(lenet_safetensors, tmp_path, [{"kind": "quantize", "dtype": "int8"}])
    module = load_container_module(_container(out))
    x = torch.randn(3, 1, 28, 28)
    expected = build_architecture("lenet-300-100")
    expected.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    assert torch.equal(module(x), expected(x))


def test_program_origins_need_the_program(torchscript_file, tiny_model, tmp_path):
    out = _job(torchscript_file, tmp_path, [{"kind": "quantize", "dtype": "int8"}], "torchscript",
               {"input_shape": [2, 3, 6, 6]})
    with pytest.raises(ContainerError, match="program"):
        load_container_module(_container(out))
    module = load_container_module(_container(out), program=torchscript_file)
    x = torch.randn(2, 3, 6, 6)
    assert module(x).shape == (2, 5) and not torch.equal(module(x), tiny_model(x))


def _tamper(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info))
            zout.writestr(info, data)
    return dst


CODES = torch.tensor([-7, -1, 0, 1, 7, 3, -3, 2, 5, -5, 6, -6, 4, -4, 0], dtype=torch.int8)
SCALES = torch.tensor([0.5, 0.25, 2.0])


@pytest.fixture(scope="module")
def small_container(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("c") / "m.mpz"
    enc = Encoded("affine", (3, 5), "float32", {"bits": 4, "axis": 0, "symmetric": True},
                  {"codes": Part(CODES, "int4"), "scales": Part(SCALES, "float32")})
    write_container(path, {"w": enc, "b": raw(torch.zeros(3))}, origin={"format": "test"}, pipeline={})
    return path


def _manifest_edit(fn):
    def edit(name, data):
        if name != "manifest.json":
            return data
        m = json.loads(data)
        fn(m)
        return json.dumps(m).encode()
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda n, d: bytes([d[0] ^ 1]) + d[1:] if n == "parts.bin" else d, "sha256"),
    (_manifest_edit(lambda m: m["tensors"][0]["parts"]["codes"].update(numel=10**12)), "too many elements"),
    (_manifest_edit(lambda m: m["tensors"][0]["parts"]["codes"].update(numel=17)), "wrong size"),
    (_manifest_edit(lambda m: m.update(format_version=3)), "version"),
    (_manifest_edit(lambda m: m["tensors"][1].update(codec="exec")), "unknown codec"),
    (_manifest_edit(lambda m: m["tensors"][1].update(shape=[4, 5])), "cannot be decoded"),
    (_manifest_edit(lambda m: m["tensors"][0]["parts"]["codes"].update(offset=10**6)), "outside"),
    (_manifest_edit(lambda m: m["tensors"][0]["parts"]["codes"].update(offset=-1)), "outside"),
    # a few bytes claiming a huge decoded tensor (a sparse/codebook node could) is refused before decoding
    (_manifest_edit(lambda m: m["tensors"][1].update(shape=[1 << 20, 1 << 20])), "decodes to more than"),
])
def test_tampered_containers_are_rejected(small_container, tmp_path, edit, message):
    bad = _tamper(small_container, tmp_path / "bad.mpz", edit)
    with pytest.raises(ContainerError, match=message):
        read_container(bad)


def test_manifest_bomb_is_refused(small_container, tmp_path):
    bomb = tmp_path / "bomb.mpz"
    with zipfile.ZipFile(small_container) as zin, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zout:
        zout.writestr("manifest.json", b" " * (65 << 20))   # 65 MiB of spaces deflate to ~65 KB
        zout.writestr(zin.getinfo("parts.bin"), zin.read("parts.bin"))
    with pytest.raises(ContainerError, match="too large"):
        read_container(bomb)


def test_version_1_containers_are_still_read(tmp_path):
    """Format 1: one stored member per part with a sha256 each (containers written before version 2)."""
    import hashlib
    data = SCALES.numpy().tobytes()
    manifest = {"format": "modelpress.container", "format_version": 1, "origin": {"format": "test"}, "pipeline": {},
                "tensors": [{"name": "s", "codec": "raw", "shape": [3], "dtype": "float32", "params": {},
                             "parts": {"values": {"file": "parts/000000/values", "storage": "float32", "numel": 3,
                                                  "nbytes": 12, "sha256": hashlib.sha256(data).hexdigest()}}}]}
    old = tmp_path / "v1.mpz"
    with zipfile.ZipFile(old, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("parts/000000/values", data)
    state, _ = read_container(old)
    assert torch.equal(state["s"], SCALES)


def test_decoding_matches_the_encoder(small_container):
    state, manifest = read_container(small_container)
    assert [t["name"] for t in manifest["tensors"]] == ["w", "b"]
    assert manifest["tensors"][0]["parts"]["codes"]["nbytes"] == 8   # 15 int4 codes, two per byte
    assert torch.equal(state["w"], CODES.reshape(3, 5).float() * SCALES.reshape(3, 1))
    assert torch.equal(state["b"], torch.zeros(3))


def test_not_a_container(tmp_path, lenet_safetensors):
    with pytest.raises(ContainerError):
        read_container(lenet_safetensors)
    zipped = tmp_path / "z.mpz"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps({"format": "something-else"}))
    with pytest.raises(ContainerError, match="not a modelpress container"):
        read_container(zipped)


def test_the_dense_weights_file_is_byte_reproducible_and_still_loads(tmp_path):
    """safetensors orders its metadata at random; the job's model.safetensors must not change with it."""
    from safetensors import safe_open

    from compression.job.export import write_safetensors

    state = {"b.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(3)}
    meta = {"format": "pt", "modelpress.architecture": "x", "modelpress.origin_format": "safetensors",
            "modelpress.structure": "[]"}
    files = [tmp_path / f"{i}.safetensors" for i in range(6)]
    for path in files:
        write_safetensors(state, path, meta)
    assert len({p.read_bytes() for p in files}) == 1
    with safe_open(str(files[0]), "pt") as f:
        assert f.metadata() == meta
        assert torch.equal(f.get_tensor("b.weight"), state["b.weight"])
