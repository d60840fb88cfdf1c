"""The modelpress container (`.mpz`): one deterministic zip holding the compressed weights.

Layout (version 2; timestamp 1980-01-01, fixed attributes, fixed order):
  manifest.json   UTF-8 JSON, sorted keys, deflated (see CONTAINER.md for every field)
  parts.bin       stored; every part's raw little-endian bytes at its manifest offset; int4/uint4
                  packed two per byte, element 2i in the low nibble
Version 1 (one stored member per part, a sha256 each) is still read.

Decoding validates the manifest's structure, each part's size against its storage type and
element count, the parts' sha256, then rebuilds tensors with `encoding.decode`, the same
function the pipeline used for the in-memory model (bitwise equal by construction).
A runnable module needs the architecture (built-in origins, named in the manifest) or, for
TorchScript/torch.export origins, the program file: the container keeps only the weights.
"""
from __future__ import annotations

import hashlib
import json
import math
import zipfile
import zlib
from importlib import metadata
from pathlib import Path

import torch

from compression.formats.architectures import ARCHITECTURES, build_architecture
from compression.coding.encoding import CODECS, PACKED, STORAGE_DTYPES, Encoded, Part, decode, part_from_bytes, part_to_bytes
from compression.errors import CompressionError, ModelpressError

FORMAT_NAME = "modelpress.container"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
PARTS = "parts.bin"
MAX_MANIFEST_BYTES = 64 << 20
MAX_CONTAINER_BYTES = 8 << 30
MAX_TOTAL_ELEMENTS = 4 << 30
MAX_DECODED_ELEMENTS = 4 << 30   # 16 GiB of float32: bigger than any model a worker's memory limit admits
MAX_DEPTH = 8
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


# ---- reading (the file may be hostile) --------------------------------------------------------

def _read_bounded(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, what: str) -> bytes:
    """Reads at most `limit` bytes whatever the header claims (a deflated member may be a bomb)."""
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ContainerError(f"{what} is too large")
    return data


class _Reader:
    """Parts of version 1 (one zip member each, sha256 per part) or version 2 (offsets into parts.bin)."""

    def __init__(self, zf: zipfile.ZipFile, version: int, manifest: dict):
        self.zf = zf
        self.version = version
        self.infos = {i.filename: i for i in zf.infolist()}
        self.elements = 0
        self.decoded_elements = 0
        self.blob = b""
        if version == 2:
            info = self.infos.get(PARTS)
            if info is None or info.compress_type != zipfile.ZIP_STORED or info.file_size > MAX_CONTAINER_BYTES:
                raise ContainerError(f"{PARTS} is missing, compressed or too large")
            self.blob = _read_bounded(zf, info, MAX_CONTAINER_BYTES, PARTS)
            if hashlib.sha256(self.blob).hexdigest() != manifest.get("parts_sha256"):
                raise ContainerError(f"{PARTS} fails its sha256 check")

    def _bytes(self, obj: dict, expected: int) -> bytes:
        if self.version == 2:
            offset = obj.get("offset")
            if type(offset) is not int or offset < 0 or offset + expected > len(self.blob) \
                    or obj.get("nbytes") != expected:
                raise ContainerError(f"part at offset {offset!r} lies outside {PARTS} or has the wrong size")
            return self.blob[offset:offset + expected]
        file = obj.get("file")
        info = self.infos.get(file) if isinstance(file, str) else None
        if info is None or not file.startswith("parts/"):
            raise ContainerError(f"part {file!r} is missing")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ContainerError(f"part {file!r} is compressed; containers store parts uncompressed")
        if info.file_size != expected or obj.get("nbytes") != expected:
            raise ContainerError(f"part {file!r} has {info.file_size} bytes, expected {expected}")
        data = self.zf.read(info)
        if hashlib.sha256(data).hexdigest() != obj.get("sha256"):
            raise ContainerError(f"part {file!r} fails its sha256 check")
        return data

    def part(self, obj) -> Part:
        if not isinstance(obj, dict):
            raise ContainerError("part entry must be an object")
        storage, numel = obj.get("storage"), obj.get("numel")
        if storage not in STORAGE_DTYPES or type(numel) is not int or numel < 0:
            raise ContainerError("part with a bad storage type or element count")
        self.elements += numel
        if self.elements > MAX_TOTAL_ELEMENTS:
            raise ContainerError("container holds too many elements")
        expected = (numel + 1) // 2 if storage in PACKED else numel * STORAGE_DTYPES[storage].itemsize
        return Part(part_from_bytes(self._bytes(obj, expected), storage, numel), storage)

    def node(self, obj, depth: int = 0) -> Encoded:
        if depth > MAX_DEPTH or not isinstance(obj, dict):
            raise ContainerError("malformed encoding node")
        shape, dtype, params, parts = obj.get("shape"), obj.get("dtype"), obj.get("params"), obj.get("parts")
        if obj.get("codec") not in CODECS:
            raise ContainerError(f"unknown codec {obj.get('codec')!r} (written by a newer modelpress?)")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise ContainerError("bad tensor shape")
        if dtype not in STORAGE_DTYPES or dtype in PACKED or not isinstance(params, dict) \
                or not isinstance(parts, dict):
            raise ContainerError("malformed encoding node")
        # a tiny part can claim a huge decoded tensor (a sparse or codebook node): bound what decoding allocates
        self.decoded_elements += math.prod(shape)
        if self.decoded_elements > MAX_DECODED_ELEMENTS:
            raise ContainerError(f"container decodes to more than {MAX_DECODED_ELEMENTS} elements")
        built = {k: self.node(v, depth + 1) if isinstance(v, dict) and "codec" in v else self.part(v)
                 for k, v in parts.items()}
        return Encoded(obj["codec"], tuple(shape), dtype, params, built)


def read_encodings(path: Path) -> tuple[dict[str, Encoded], dict]:
    path = Path(path)
    if path.stat().st_size > MAX_CONTAINER_BYTES:
        raise ContainerError("container is too large")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ContainerError(f"not a modelpress container: {exc}") from None
    with zf:
        info = next((i for i in zf.infolist() if i.filename == MANIFEST), None)
        if info is None or info.file_size > MAX_MANIFEST_BYTES:
            raise ContainerError("manifest.json is missing or too large")
        try:
            manifest = json.loads(_read_bounded(zf, info, MAX_MANIFEST_BYTES, MANIFEST))
        except (UnicodeDecodeError, json.JSONDecodeError, zipfile.BadZipFile, zlib.error) as exc:
            raise ContainerError(f"manifest.json is not valid JSON: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise ContainerError("not a modelpress container")
        version = manifest.get("format_version")
        if version not in READABLE_VERSIONS:
            raise ContainerError(f"container format version {version!r} is not supported "
                                 f"(this modelpress reads versions {', '.join(map(str, READABLE_VERSIONS))})")
        try:
            reader = _Reader(zf, version, manifest)
        except (zipfile.BadZipFile, zlib.error) as exc:
            raise ContainerError(f"{PARTS} is corrupt: {exc}") from None
        entries = manifest.get("tensors")
        if not isinstance(entries, list):
            raise ContainerError("manifest has no tensor list")
        encodings = {}
        for entry in entries:
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str) or name in encodings:
                raise ContainerError(f"bad or duplicate tensor name {name!r}")
            encodings[name] = reader.node(entry)
    return encodings, manifest


def read_container(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """-> (state_dict, manifest). Raises ContainerError on anything malformed."""
    encodings, manifest = read_encodings(path)
    state = {}
    for name, enc in encodings.items():
        try:
            tensor = decode(enc)
        except Exception as exc:   # params or parts inconsistent with the codec
            raise ContainerError(f"tensor {name!r} cannot be decoded: {type(exc).__name__}: {exc}") from None
        if tuple(tensor.shape) != enc.shape or str(tensor.dtype) != f"torch.{enc.dtype}":
            raise ContainerError(f"tensor {name!r} decodes to the wrong shape or dtype")
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
