"""The modelpress container (`.mpz`): one deterministic zip holding the compressed weights.

Layout (version 2; timestamp 1980-01-01, fixed attributes, fixed order):
  manifest.json   UTF-8 JSON, sorted keys, deflated (mpclient/format/CONTAINER.md has every field)
  parts.bin       stored; every part's raw little-endian bytes at its manifest offset; int4/uint4
                  packed two per byte, element 2i in the low nibble
Version 1 (one stored member per part, a sha256 each) is still read.

Reading is the torch-free reader's (mpclient/format/container.py: validates the manifest's structure,
each part's size against its storage type and element count, the parts' sha256, and decodes with the
codecs `encoding.decode` uses for the in-memory model: bitwise equal by construction).
A runnable module needs the architecture (built-in origins, named in the manifest) or, for
TorchScript/torch.export origins, the program file: the container keeps only the weights.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from importlib import metadata
from pathlib import Path

import torch

from compression.formats.architectures import ARCHITECTURES, build_architecture
from compression.coding.encoding import STORAGE_DTYPES, Encoded, part_to_bytes
from mpclient.format import container as reader
from compression.errors import CompressionError, ModelpressError

FORMAT_NAME = "modelpress.container"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
PARTS = "parts.bin"
_EPOCH = (1980, 1, 1, 0, 0, 0)


class ContainerError(ModelpressError, ValueError):
    """The file is not a valid modelpress container (corrupt, tampered or too new)."""


def _version() -> str:
    try:
        return metadata.version("modelpress")
    except metadata.PackageNotFoundError:
        return "unknown"


def _member(zf: zipfile.ZipFile, name: str, data: bytes, compress: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    zf.writestr(info, data, compresslevel=9 if compress else None)


def _decode_requires(origin: dict) -> str:
    """What besides modelpress rebuilds a runnable model (see CONTAINER.md)."""
    if origin.get("architecture"):
        return "architecture"
    if origin.get("hf_config"):
        return "hf-config"   # carried in the manifest: transformers builds the module
    return "program"


def write_container(path: Path, encodings: dict[str, Encoded], *, origin: dict, pipeline: dict,
                    structure: list[dict] | None = None) -> int:
    """Write tensors (in the given order) and return the file's size in bytes.

    Version 2: every part lives in one `parts.bin` at an offset, and the manifest is deflated. On
    small models the per-member zip headers and a sha256 per part were more bytes than the weights;
    the zip's CRC-32 per member and one sha256 of `parts.bin` keep the integrity check."""
    blob = bytearray()

    def node_json(node: Encoded) -> dict:
        parts = {}
        for key in sorted(node.parts):
            part = node.parts[key]
            if isinstance(part, Encoded):
                parts[key] = node_json(part)
                continue
            data = part_to_bytes(part)
            parts[key] = {"offset": len(blob), "storage": part.storage, "numel": part.numel, "nbytes": len(data)}
            blob.extend(data)
        return {"codec": node.codec, "shape": list(node.shape), "dtype": node.dtype, "params": node.params,
                "parts": parts}

    tensors = [{"name": name, **node_json(enc)} for name, enc in encodings.items()]
    manifest = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "writer": {"modelpress": _version(), "torch": torch.__version__},
        "origin": origin,
        "decode_requires": _decode_requires(origin),
        "pipeline": pipeline,
        "tensors": tensors,
        "parts_sha256": hashlib.sha256(blob).hexdigest(),
    }
    if structure:   # architecture edits replayed on the original architecture (compression.formats.structure)
        manifest["structure"] = structure
    path = Path(path)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        _member(zf, MANIFEST, json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode(), compress=True)
        _member(zf, PARTS, bytes(blob))
    return path.stat().st_size


# ---- reading (the file may be hostile): the torch-free reader does it, decoding with the same codecs

def read_container(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """-> (state_dict, manifest). Raises ContainerError on anything malformed."""
    try:
        arrays, manifest = reader.read(path)
    except reader.ContainerError as exc:
        raise ContainerError(str(exc)) from None
    state = {}
    for entry in manifest["tensors"]:
        name, dtype = entry["name"], entry["dtype"]
        # bfloat16 arrives as float32 holding bfloat16 values: the cast is exact
        tensor = torch.from_numpy(arrays[name].copy()).to(STORAGE_DTYPES[dtype])
        if tuple(tensor.shape) != tuple(entry["shape"]):
            raise ContainerError(f"tensor {name!r} decodes to the wrong shape")
        state[name] = tensor
    return state, manifest


def load_container_module(path: Path, *, program: Path | None = None) -> torch.nn.Module:
    """A runnable module: the built-in architecture named in the manifest, or `program` (the
    original TorchScript/.pt2 file, or the dense one a job produced) with the decoded weights."""
    from compression.formats import load_program   # formats imports torch.export machinery lazily

    state, manifest = read_container(path)
    origin = manifest.get("origin") or {}
    arch = origin.get("architecture")
    if arch:
        if arch not in ARCHITECTURES:
            raise ContainerError(f"container needs architecture {arch!r}, unknown to this modelpress")
        model = build_architecture(arch)
    elif origin.get("hf_config"):   # config.json kept in the manifest: needs transformers only
        from compression.formats.hf_folder import container_module
        model = container_module(origin.get("hf_config"))
    elif program is not None:
        model = load_program(Path(program), origin.get("format", ""))
    else:
        raise ContainerError(f"this container holds weights for a {origin.get('format')} program; "
                             "pass the program file (program=...) to rebuild a runnable module")
    if manifest.get("structure"):
        from compression.formats.structure import apply_structure
        try:
            apply_structure(model, manifest["structure"])
        except CompressionError as exc:
            raise ContainerError(str(exc)) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ContainerError(f"container weights do not fit the module: {exc}"[:500]) from None
    return model
