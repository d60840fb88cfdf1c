"""Reading a modelpress container (`.mpz`) without torch: the file may be hostile.

    from mpclient.format import load_state_dict
    weights = load_state_dict("model.mpz")        # {tensor name: numpy array}

Layout and every manifest field: CONTAINER.md beside this file. Validates the manifest's structure, each
part's size against its storage type and element count, the sha256 of the parts, and bounds what decoding
may allocate, then decodes with `codecs.decode_node` (the decoder the service uses too). bfloat16 tensors
come back as float32 holding the same values (numpy has no bfloat16); the manifest names the dtype.
"""
from __future__ import annotations

import hashlib
import json
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from mpclient.format.codecs import CODECS, decode_node
from mpclient.format.storage import PACKED, STORAGE, part_from_bytes, stored_nbytes

FORMAT_NAME = "modelpress.container"
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
PARTS = "parts.bin"
MAX_MANIFEST_BYTES = 64 << 20
MAX_CONTAINER_BYTES = 8 << 30
MAX_TOTAL_ELEMENTS = 4 << 30
MAX_DECODED_ELEMENTS = 4 << 30   # 16 GiB of float32
MAX_DEPTH = 8


class ContainerError(ValueError):
    """The file is not a valid modelpress container (corrupt, tampered or too new)."""


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

    def part(self, obj) -> np.ndarray:
        if not isinstance(obj, dict):
            raise ContainerError("part entry must be an object")
        storage, numel = obj.get("storage"), obj.get("numel")
        if storage not in STORAGE or type(numel) is not int or numel < 0:
            raise ContainerError("part with a bad storage type or element count")
        self.elements += numel
        if self.elements > MAX_TOTAL_ELEMENTS:
            raise ContainerError("container holds too many elements")
        return part_from_bytes(self._bytes(obj, stored_nbytes(storage, numel)), storage, numel)

    def node(self, obj, depth: int = 0) -> np.ndarray:
        if depth > MAX_DEPTH or not isinstance(obj, dict):
            raise ContainerError("malformed encoding node")
        shape, dtype, params, parts = obj.get("shape"), obj.get("dtype"), obj.get("params"), obj.get("parts")
        if obj.get("codec") not in CODECS:
            raise ContainerError(f"unknown codec {obj.get('codec')!r} (written by a newer modelpress?)")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise ContainerError("bad tensor shape")
        if dtype not in STORAGE or dtype in PACKED or not isinstance(params, dict) or not isinstance(parts, dict):
            raise ContainerError("malformed encoding node")
        # a tiny part can claim a huge decoded tensor (a sparse or codebook node): bound what decoding allocates
        self.decoded_elements += math.prod(shape)
        if self.decoded_elements > MAX_DECODED_ELEMENTS:
            raise ContainerError(f"container decodes to more than {MAX_DECODED_ELEMENTS} elements")
        built = {k: self.node(v, depth + 1) if isinstance(v, dict) and "codec" in v else self.part(v)
                 for k, v in parts.items()}
        try:
            return decode_node(obj["codec"], tuple(shape), dtype, params, built)
        except ContainerError:
            raise
        except Exception as exc:   # params or parts inconsistent with the codec
            raise ContainerError(f"cannot be decoded: {type(exc).__name__}: {exc}") from None


def read(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """-> (tensors by name in stored order, manifest). Raises ContainerError on anything malformed."""
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
                                 f"(this reader reads versions {', '.join(map(str, READABLE_VERSIONS))})")
        try:
            reader = _Reader(zf, version, manifest)
        except (zipfile.BadZipFile, zlib.error) as exc:
            raise ContainerError(f"{PARTS} is corrupt: {exc}") from None
        entries = manifest.get("tensors")
        if not isinstance(entries, list):
            raise ContainerError("manifest has no tensor list")
        tensors: dict[str, np.ndarray] = {}
        for entry in entries:
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str) or name in tensors:
                raise ContainerError(f"bad or duplicate tensor name {name!r}")
            try:
                tensors[name] = reader.node(entry)
            except ContainerError as exc:
                raise ContainerError(f"tensor {name!r}: {exc}") from None
    return tensors, manifest


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The container's weights by name, as numpy arrays (load them into any framework)."""
    return read(path)[0]


def read_manifest(path: str | Path) -> dict:
    """What the container says about itself: origin, pipeline, tensors' encodings, what rebuilds a model."""
    return read(path)[1]
