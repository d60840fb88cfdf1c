"""Hugging Face folders as .zip / .tar.gz: real loading, and hostile archives refused with a clear 4xx."""
from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from compression.coding.container import load_container_module, read_container
from compression.formats import ModelFormatError, load_model, sniff
from compression.formats import archives

TINY_CONFIG = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 64, "hidden_size": 16,
               "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
               "max_position_embeddings": 64}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> dict[str, bytes]:
    from transformers import AutoModel, BertConfig

    torch.manual_seed(0)
    model = AutoModel.from_config(BertConfig(**{k: v for k, v in TINY_CONFIG.items() if k != "model_type"}))
    folder = tmp_path_factory.mktemp("tiny-bert")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return {"config.json": json.dumps(TINY_CONFIG).encode(), "model.safetensors": (folder / "model.safetensors").read_bytes()}


def make_zip(path: Path, members: dict[str, bytes], prefix: str = "tiny/") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(prefix + name, data)
    return path


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def refused(path: Path, status: int = 422) -> str:
    with pytest.raises(ModelFormatError) as info:
        sniff(path)
    assert info.value.status_code == status, info.value.message
    return info.value.message


def test_zip_and_tar_gz_load_and_summarise(tmp_path, tiny_folder):
    for path in (make_zip(tmp_path / "m.zip", tiny_folder), make_tar(tmp_path / "m.tar.gz", tiny_folder),
                 make_tar(tmp_path / "m.tar", tiny_folder, "w")):
        info = sniff(path)
        assert info.format == "hf-folder"
        s = info.summary
        assert s["model_type"] == "bert" and s["architectures"] == ["BertModel"] and s["layers_count"] == 1
        assert s["tokenizer"] == [] and s["weights_bytes"] == len(tiny_folder["model.safetensors"])
        loaded = load_model(path, "hf-folder", {})
        assert type(loaded.model).__name__ == "BertModel" and not loaded.model.training
        assert s["parameters"] == sum(p.numel() for p in loaded.model.parameters())
        ids, mask = loaded.sample_inputs   # no tokenizer: random ids within the vocabulary
        assert ids.max() < 64 and mask.shape == ids.shape
        emb = loaded.probe(loaded.model, loaded.sample_inputs)
        assert emb.shape == (ids.shape[0], 16) and torch.allclose(emb.norm(dim=1), torch.ones(ids.shape[0], dtype=emb.dtype))


def test_content_wins_over_the_extension(tmp_path, tiny_folder):
    assert sniff(make_zip(tmp_path / "model.safetensors", tiny_folder)).format == "hf-folder"
    assert sniff(make_tar(tmp_path / "model.zip", tiny_folder)).format == "hf-folder"


def test_job_exports_a_runnable_folder_and_a_self_describing_container(tmp_path, tiny_folder):
    from compression.job.runner import run_compression_job
    from compression.pipeline import parse_pipeline

    out = run_compression_job(make_zip(tmp_path / "m.zip", tiny_folder), "hf-folder", {},
                              parse_pipeline({"stages": [{"kind": "quantize", "dtype": "int8"}]}), tmp_path / "out")
    kinds = {a.kind: a.path for a in out.artifacts}
    # int8 per channel is a symmetric grid: the compressed-tensors folder holds it too (test_hf_compressed.py)
    assert set(kinds) == {"container", "safetensors", "hf-folder", "onnx", "onnx-compact", "hf-compressed-tensors",
                          "report"}
    assert set(out.metrics["verification"]) == {"model.mpz", "model.safetensors", "model-hf.zip", "model.onnx",
                                                 "model.compact.onnx", "model-ct.zip"}
    # the text model's ONNX takes input_ids and attention_mask; its int8 weights are DequantizeLinear'd in the graph
    assert "dequantize int8" in set(out.metrics["exports"]["onnx_compact"]["forms"].values())
    assert out.metrics["output_mean_cosine"] > 0.9
    _, manifest = read_container(kinds["container"])
    assert manifest["decode_requires"] == "hf-config"
    assert manifest["origin"]["format"] == "hf-folder" and manifest["origin"]["hf_config"]["model_type"] == "bert"
    module = load_container_module(kinds["container"])   # no other file needed
    exported = load_model(kinds["hf-folder"], "hf-folder", {})
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        a = module(input_ids=ids).last_hidden_state
        b = exported.model(input_ids=ids).last_hidden_state
    assert torch.equal(a, b)


def test_zip_bomb_is_refused_without_inflating(tmp_path, tiny_folder):
    path = tmp_path / "bomb.zip"
    make_zip(path, tiny_folder)
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf, \
            zf.open("tiny/zeros.bin", "w", force_zip64=True) as f:
        for _ in range(256):   # 256 MiB of zeros in about 256 KB (1 GiB works the same, 4x slower to build)
            f.write(chunk)
    assert path.stat().st_size < 2 << 20
    assert "zip bomb" in refused(path)


def test_gzip_bomb_tar_is_refused(tmp_path, tiny_folder):
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in tiny_folder.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("zeros.bin")
        info.size = 256 << 20

        class Zeros(io.RawIOBase):
            left = 256 << 20

            def readable(self):
                return True

            def readinto(self, b):
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n
        tf.addfile(info, io.BufferedReader(Zeros(), 1 << 20))
    assert "zip bomb" in refused(path)


def test_total_unpacked_size_is_bounded(tmp_path, tiny_folder, monkeypatch):
    monkeypatch.setattr(archives, "MAX_UNPACKED_BYTES", 1000)
    assert "more than 1000 bytes" in refused(make_zip(tmp_path / "m.zip", tiny_folder))


def test_too_many_members(tmp_path, tiny_folder, monkeypatch):
    monkeypatch.setattr(archives, "MAX_ARCHIVE_MEMBERS", 5)
    members = {**tiny_folder, **{f"extra{i}.txt": b"x" for i in range(10)}}
    assert "too many members" in refused(make_zip(tmp_path / "m.zip", members))


def test_huge_zip_directories_are_refused_before_listing(tmp_path, tiny_folder, monkeypatch):
    import compression.formats as formats

    monkeypatch.setattr(formats, "MAX_ZIP_MEMBERS", 5)
    members = {**tiny_folder, **{f"extra{i}.txt": b"x" for i in range(10)}}
    assert "too many members (12 > 5)" in refused(make_zip(tmp_path / "m.zip", members))


@pytest.mark.parametrize("name", ["../evil", "tiny/../../evil", "/tmp/evil"])
def test_path_traversal_members_are_refused(tmp_path, tiny_folder, name):
    zpath = make_zip(tmp_path / "m.zip", tiny_folder)
    with zipfile.ZipFile(zpath, "a") as zf:
        info = zipfile.ZipInfo("x")
        info.filename = name   # bypass ZipInfo's own clean-up, as a hostile tool would
        zf.writestr(info, b"pwned")
    msg = refused(zpath)
    assert "outside the archive" in msg or "absolute path" in msg
    tpath = make_tar(tmp_path / "m.tar.gz", {**tiny_folder, name: b"pwned"})
    msg = refused(tpath)
    assert "outside the archive" in msg or "absolute path" in msg
    with pytest.raises(ModelFormatError):
        load_model(tpath, "hf-folder", {})
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()


def test_links_and_devices_in_a_tar_are_refused(tmp_path, tiny_folder):
    for kind, why in ((tarfile.SYMTYPE, "symlink"), (tarfile.LNKTYPE, "hardlink"), (tarfile.CHRTYPE, "not a regular")):
        path = tmp_path / f"{why}.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            info = tarfile.TarInfo("vocab.txt")
            info.type, info.linkname = kind, "/etc/passwd"
            tf.addfile(info)
            for name, data in tiny_folder.items():
                member = tarfile.TarInfo(name)
                member.size = len(data)
                tf.addfile(member, io.BytesIO(data))
        assert why in refused(path)


def test_symlink_in_a_zip_is_refused(tmp_path, tiny_folder):
    path = make_zip(tmp_path / "m.zip", tiny_folder)
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo("tiny/vocab.txt")
        info.create_system, info.external_attr = 3, (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    assert "symlink" in refused(path)


def test_truncated_archives(tmp_path, tiny_folder):
    data = make_zip(tmp_path / "m.zip", tiny_folder).read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[: len(data) // 2])
    refused(cut, 415)   # central directory gone: not recognisable as anything
    data = make_tar(tmp_path / "m.tar.gz", tiny_folder).read_bytes()
    cut_tar = tmp_path / "cut.tar.gz"
    cut_tar.write_bytes(data[: len(data) // 2])
    assert "truncated" in refused(cut_tar)


def test_truncated_and_forged_safetensors_members(tmp_path, tiny_folder):
    weights = tiny_folder["model.safetensors"]
    cut = make_zip(tmp_path / "cut.zip", {**tiny_folder, "model.safetensors": weights[: len(weights) // 2]})
    assert "truncated" in refused(cut) or "file holds only" in refused(cut)
    header = json.dumps({"embeddings.word_embeddings.weight": {
        "dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}).encode()
    forged = make_zip(tmp_path / "huge.zip", {**tiny_folder,
                                              "model.safetensors": struct.pack("<Q", len(header)) + header + bytes(64)})
    assert "file holds only" in refused(forged)
    no_header = make_zip(tmp_path / "nohdr.zip", {**tiny_folder, "model.safetensors": b"\xff" * 64})
    refused(no_header)


def test_remote_code_configs_are_refused(tmp_path, tiny_folder):
    evil = {**TINY_CONFIG, "auto_map": {"AutoModel": "modeling_evil.EvilModel"}}
    path = make_zip(tmp_path / "m.zip", {**tiny_folder, "config.json": json.dumps(evil).encode(),
                                         "modeling_evil.py": b"import os; os.system('touch /tmp/pwned')"})
    assert "auto_map" in refused(path) and "never runs code" in refused(path)
    tok = make_zip(tmp_path / "t.zip", {**tiny_folder, "tokenizer_config.json": json.dumps(
        {"auto_map": {"AutoTokenizer": ["tok.Evil", None]}}).encode()})
    assert "auto_map" in refused(tok)
    unknown = make_zip(tmp_path / "u.zip", {**tiny_folder, "config.json": json.dumps(
        {**TINY_CONFIG, "model_type": "evil-net"}).encode()})
    assert "evil-net" in refused(unknown)


def test_missing_members_and_pickle_weights(tmp_path, tiny_folder):
    assert "model.safetensors" in refused(make_zip(tmp_path / "a.zip", {"config.json": tiny_folder["config.json"]}))
    msg = refused(make_zip(tmp_path / "b.zip", {"config.json": tiny_folder["config.json"],
                                               "pytorch_model.bin": b"\x80\x02pickle"}))
    assert "never unpickled" in msg
    assert "config.json" in refused(make_zip(tmp_path / "c.zip", {"model.safetensors": tiny_folder["model.safetensors"]}),
                                    415)


def test_nan_weights_are_refused_at_load(tmp_path, tiny_folder):
    """Finding NaN/Inf means reading all the weights, so the API's sniff accepts the upload and the
    worker refuses it: the job fails with this reason."""
    from safetensors.torch import load, save

    state = load(tiny_folder["model.safetensors"])
    state["encoder.layer.0.output.dense.weight"][0, 0] = float("nan")
    path = make_zip(tmp_path / "nan.zip", {**tiny_folder, "model.safetensors": save(state)})
    assert sniff(path).format == "hf-folder"
    with pytest.raises(ModelFormatError, match="NaN or Inf"):
        load_model(path, "hf-folder", {})
