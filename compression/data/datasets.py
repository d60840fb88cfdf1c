"""User-uploaded datasets (.npz, safetensors, CSV, Parquet, JSONL) turned into TensorData.

Uploads are hostile: the format is found by content, nothing is ever unpickled (np.load always
with allow_pickle=False; torch.save files are refused), and sizes are checked from headers and
zip directories before anything is decoded. Every problem is a DatasetError with an HTTP status:
415 not a dataset file, 413 too large / too many samples, 422 recognised but invalid."""
from __future__ import annotations

import codecs
import json
import math
import re
import struct
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from compression.errors import ModelpressError

from compression.data.tensor_data import TensorData

MAX_DATASET_BYTES: int = 2 * 2**30
MAX_SAMPLES: int = 1_000_000
MAX_ELEMENTS: int = 500_000_000   # total decoded tensor elements
MAX_TEXT_CHARS: int = 20_000      # per JSONL text
MAX_NPZ_MEMBERS = 64
MAX_SAFETENSORS_HEADER = 100 << 20
BOMB_RATIO, BOMB_MIN_BYTES = 200, 1 << 20
MAX_JSONL_LINE = MAX_TEXT_CHARS * 6 + 4096   # a text of \uXXXX escapes plus a few small keys
FORMATS = ("npz", "safetensors", "csv", "parquet", "jsonl")

NOT_A_DATASET = ("not a dataset file: send .npz, safetensors, CSV, Parquet or JSONL "
                 '(one {"text": ..., "label": ...} object per line)')
PICKLE_REFUSED = "pickles are never loaded; save arrays with numpy.savez"
ACCEPTED_NAMES = "inputs: 'inputs' or 'x', or 'input_0', 'input_1', ...; labels (optional): 'labels' or 'y'"
NO_TOKENIZER = "text datasets need a model with a tokenizer (a Hugging Face folder upload)"

_NP_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}
_ST_DTYPES = {"F16", "BF16", "F32", "F64", "I8", "I16", "I32", "I64", "U8", "BOOL"}
_TORCH_DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int16,
                 torch.int32, torch.int64, torch.uint8, torch.bool}
_INDEXED = re.compile(r"input_(0|[1-9][0-9]{0,5})")


class DatasetError(ModelpressError):
    """The dataset file is refused (422) or too large (413)."""


# ---------------------------------------------------------------- detection by content

def _detect(path: Path) -> str:
    size = path.stat().st_size
    if size == 0:
        raise DatasetError("the dataset file is empty")
    if size > MAX_DATASET_BYTES:
        raise DatasetError(f"dataset file is {size} bytes; the limit is {MAX_DATASET_BYTES}", 413)
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "npz"   # any zip; the npz reader refuses torch.save archives and other zips with 415
    if head[:4] == b"PAR1":
        return "parquet"
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= MAX_SAFETENSORS_HEADER:
        return "safetensors"   # header length + '{'; the reader checks it against the file size
    if head[:1] == b"\x80":
        raise DatasetError(f"this looks like a pickle (torch.save / pickle.dump): {PICKLE_REFUSED}", 415)
    if head.startswith(b"\x93NUMPY"):
        raise DatasetError("a single .npy holds no names; save inputs and labels together with "
                           "numpy.savez(path, inputs=..., labels=...)", 415)
    try:   # incremental: the 64 KiB cut may split a multi-byte character
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=len(head) == size)
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise DatasetError(NOT_A_DATASET, 415)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return "jsonl" if first[:1] in ("{", "[") else "csv"   # '[': a JSON array gets JSONL's line errors


def _split_names(names: list[str]) -> tuple[list[str], str | None]:
    """Input names in order and the label name, by the naming rules (the same for npz and safetensors)."""
    names_set = set(names)
    labels = sorted(names_set & {"labels", "y"})
    single = sorted(names_set & {"inputs", "x"})
    indexed = sorted((n for n in names_set if _INDEXED.fullmatch(n)), key=lambda n: int(n[6:]))
    unknown = sorted(names_set - set(labels) - set(single) - set(indexed))
    if unknown:
        raise DatasetError(f"unknown array names {unknown[:10]}; accepted names are {ACCEPTED_NAMES}")
    if len(labels) > 1:
        raise DatasetError("both 'labels' and 'y' are present; keep one")
    if len(single) + bool(indexed) > 1:
        raise DatasetError(f"ambiguous inputs {single + indexed[:3]}; use one naming scheme ({ACCEPTED_NAMES})")
    if indexed and indexed != [f"input_{i}" for i in range(len(indexed))]:
        raise DatasetError(f"indexed inputs must be input_0, input_1, ... without gaps; got {indexed[:10]}")
    inputs = single or indexed
    if not inputs:
        raise DatasetError(f"no input arrays; accepted names are {ACCEPTED_NAMES}")
    return inputs, (labels[0] if labels else None)


# ---------------------------------------------------------------- readers: (inputs, labels, texts)

def _read_npz(path: Path):
    from compression.formats.archives import zip_entry_count
    count = zip_entry_count(path)   # before infolist: millions of entries would cost gigabytes
    if count is None:
        raise DatasetError("not a readable .npz (truncated or corrupt zip)")
    if count > MAX_NPZ_MEMBERS:
        raise DatasetError(f"the archive has {count} members; an .npz may hold at most {MAX_NPZ_MEMBERS}")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if any(n.endswith(".pkl") or n.rsplit("/", 1)[-1] in ("data.pkl", "version") for n in names):
                raise DatasetError(f"this is a torch.save archive: {PICKLE_REFUSED}", 415)
            if not names or not all(n.endswith(".npy") for n in names):
                raise DatasetError(f"a zip that is not an .npz (members must all be .npy): {NOT_A_DATASET}", 415)
            for info in infos:
                name, size = info.filename, info.file_size
                if "/" in name or "\\" in name or ".." in name or info.flag_bits & 0x1:
                    raise DatasetError(f"archive member {name[:100]!r} is not allowed (a path or encrypted)")
                if size > BOMB_MIN_BYTES and size > BOMB_RATIO * max(info.compress_size, 1):
                    raise DatasetError(f"archive member {name!r} claims {size} bytes from {info.compress_size} "
                                       "compressed: a zip bomb; refused")
            if sum(i.file_size for i in infos) > MAX_ELEMENTS * 8:
                raise DatasetError(f"the .npz unpacks to more than {MAX_ELEMENTS * 8} bytes", 413)
            keys = [n[:-4] for n in names]
            if len(set(keys)) != len(keys):
                raise DatasetError("the .npz names an array twice")
            inputs, label = _split_names(keys)
            elements = 0
            for info, key in zip(infos, keys):   # headers first: np.load allocates the declared shape up front
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in ((1, 0), (2, 0)):
                        raise DatasetError(f"array {key!r}: unsupported .npy version {version}")
                    shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0)(f)
                if dtype.hasobject:
                    raise DatasetError(f"array {key!r} holds Python objects: object arrays are not allowed "
                                       "(they would need unpickling)")
                if dtype.name not in _NP_DTYPES:
                    raise DatasetError(f"array {key!r} has dtype {dtype}; allowed: {sorted(_NP_DTYPES)}")
                if math.prod(shape) * dtype.itemsize > info.file_size:
                    raise DatasetError(f"array {key!r} declares shape {list(shape)}, more data than it holds")
                elements += math.prod(shape)
            _check_elements(elements)
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in keys}
    except (DatasetError, MemoryError):
        raise
    except Exception as exc:   # zipfile, zlib and numpy's header parser raise many types on garbage
        raise DatasetError(f"not a readable .npz (truncated or corrupt?): {exc}"[:300]) from None
    tensors = {k: torch.from_numpy(np.ascontiguousarray(a, a.dtype.newbyteorder("="))) for k, a in arrays.items()}
    return [(k, tensors[k]) for k in inputs], (tensors[label] if label else None), None


def _read_safetensors(path: Path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if 8 + n > path.stat().st_size:
            raise DatasetError("safetensors file is truncated (its header runs past the end of the file)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise DatasetError("safetensors header is not valid JSON (corrupt or truncated)") from None
    if not isinstance(header, dict):
        raise DatasetError("safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    elements = 0
    for name, meta in header.items():
        shape = meta.get("shape") if isinstance(meta, dict) else None
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise DatasetError(f"safetensors entry {name[:100]!r} has no valid shape")
        if meta.get("dtype") not in _ST_DTYPES:
            raise DatasetError(f"tensor {name[:100]!r} has dtype {str(meta.get('dtype'))[:20]}; "
                               f"allowed: {sorted(_ST_DTYPES)}")
        elements += math.prod(shape)
    _check_elements(elements)
    inputs, label = _split_names(list(header))
    try:
        from safetensors.torch import load_file
        tensors = load_file(str(path))
    except Exception as exc:   # SafetensorError and friends: offsets, sizes, truncation
        raise DatasetError(f"safetensors file is corrupt or truncated: {exc}"[:300]) from None
    return [(k, tensors[k]) for k in inputs], (tensors[label] if label else None), None


def _read_table(path: Path, fmt: str):
    import pandas as pd
    from pandas.api import types
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq
            meta = pq.ParquetFile(path).metadata   # rows and columns known before decoding anything
            _check_samples(meta.num_rows)
            _check_elements(meta.num_rows * meta.num_columns)
            df = pd.read_parquet(path, engine="pyarrow")
        else:
            with open(path, "rb") as f:
                df = pd.read_csv(f, nrows=MAX_SAMPLES + 1, encoding="utf-8-sig", compression=None)
    except (DatasetError, MemoryError):
        raise
    except Exception as exc:   # pandas/pyarrow raise many types for broken files
        raise DatasetError(f"not a readable {fmt.upper()} file: {str(exc).strip()}"[:300]) from None
    columns = [str(c) for c in df.columns]
    if len(set(columns)) != len(columns):
        raise DatasetError("column names must be unique")
    if fmt == "csv" and columns and all(re.fullmatch(r"[-+0-9.eE]+", c) for c in columns):
        raise DatasetError("the first CSV line must be a header of column names (a 'label' column holds the labels)")
    df.columns = columns
    numeric = lambda s: types.is_float_dtype(s) or types.is_integer_dtype(s) or types.is_bool_dtype(s)  # noqa: E731
    labels = df.pop("label") if "label" in df.columns else None
    if labels is not None and not numeric(labels):
        raise DatasetError(f"labels must be integer class ids (column 'label' is {labels.dtype})")
    if labels is not None:   # via float64: _check_labels refuses non-integral values and anything past 2**53
        labels = torch.tensor(labels.to_numpy(dtype=np.float64, na_value=np.nan))
    bad = [c for c in df.columns if not numeric(df[c])]
    if bad:
        raise DatasetError(f"column {bad[0]!r} is not numeric ({df[bad[0]].dtype})"
                           + (f"; also {bad[1:6]}" if len(bad) > 1 else "") + ": every column except 'label' is a feature")
    if df.shape[1] == 0:
        raise DatasetError("no feature columns: every column except 'label' is a feature")
    _check_samples(len(df))
    _check_elements(df.shape[0] * df.shape[1])
    x = torch.tensor(df.to_numpy(dtype=np.float32, na_value=np.nan))
    nonfinite = [c for c, ok in zip(df.columns, torch.isfinite(x).all(0).tolist()) if not ok]
    if nonfinite:
        raise DatasetError(f"input 'features' has missing, NaN or infinite values in columns {nonfinite[:10]}")
    return [("features", x)], labels, None


def _read_jsonl(path: Path):
    texts, labels, labelled = [], [], None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(iter(lambda: f.readline(MAX_JSONL_LINE + 1), b""), 1):
            if len(raw) > MAX_JSONL_LINE:
                raise DatasetError(f"line {lineno} is longer than {MAX_JSONL_LINE} bytes")
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                raise DatasetError(f"line {lineno} is not valid UTF-8 JSON") from None
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise DatasetError(f'line {lineno}: expected an object with a non-empty "text" string')
            if len(text) > MAX_TEXT_CHARS:
                raise DatasetError(f"line {lineno}: text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
            has = "label" in obj
            if labelled is None:
                labelled = has
            elif has != labelled:
                raise DatasetError(f'line {lineno}: either every line has a "label" or none does '
                                   f"(the first line {'has one' if labelled else 'has none'})")
            if has:
                label = obj["label"]
                if type(label) is not int:
                    raise DatasetError(f'line {lineno}: "label" must be an integer class id')
                if label >= 2**63:
                    raise DatasetError(f"line {lineno}: labels out of range: {label}")
                labels.append(label)
            texts.append(text)
            _check_samples(len(texts))
    return [], (torch.tensor(labels, dtype=torch.int64) if labelled else None), texts


# ---------------------------------------------------------------- validation shared by all formats

def _check_samples(n: int) -> None:
    if n > MAX_SAMPLES:
        raise DatasetError(f"the dataset has more than {MAX_SAMPLES} samples", 413)


def _check_elements(n: int) -> None:   # 413 before decoding whenever headers tell the size
    if n > MAX_ELEMENTS:
        raise DatasetError(f"the dataset has {n} values; the limit is {MAX_ELEMENTS}", 413)


def _check_labels(labels: torch.Tensor) -> torch.Tensor:
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.dim() != 1:
        raise DatasetError(f"labels must be a 1-D tensor of class ids (shape [N]); got shape {list(labels.shape)}")
    if labels.is_floating_point():   # integral floats (e.g. a CSV column with 1.0, 2.0) are fine
        as64 = labels.double()
        if not (bool(torch.isfinite(as64).all()) and bool((as64 == as64.round()).all())
                and bool((as64.abs() < 2**53).all())):
            raise DatasetError("labels must be integer class ids (found non-integral or missing values)")
    elif labels.dtype not in (torch.bool, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        raise DatasetError(f"labels must be integer class ids (got {str(labels.dtype).removeprefix('torch.')})")
    labels = labels.to(torch.int64)
    if len(labels) and int(labels.min()) < 0:
        raise DatasetError(f"labels out of range: min {int(labels.min())}")
    return labels


def _read_checked(path: Path, fmt: str):
    """-> (inputs [(name, tensor)] converted for jobs, stored dtypes, labels int64 | None, texts | None)."""
    readers = {"npz": _read_npz, "safetensors": _read_safetensors, "jsonl": _read_jsonl,
               "csv": lambda p: _read_table(p, "csv"), "parquet": lambda p: _read_table(p, "parquet")}
    inputs, labels, texts = readers[fmt](path)
    if texts is None and not inputs:
        raise DatasetError("the dataset has no input tensors")
    for name, t in inputs:
        if t.dim() == 0:
            raise DatasetError(f"input {name!r} is a scalar; inputs need the samples as their first dimension")
    lengths = [(n, int(t.shape[0])) for n, t in inputs] if texts is None else [("texts", len(texts))]
    if labels is not None:
        lengths.append(("labels", int(labels.shape[0]) if labels.dim() else 1))
    if len({n for _, n in lengths}) > 1:
        raise DatasetError("inputs and labels must have the same number of samples: "
                           + ", ".join(f"{name} has {n}" for name, n in lengths))
    samples = lengths[0][1]
    if samples == 0:
        raise DatasetError("the dataset has no samples")
    _check_samples(samples)
    _check_elements(sum(t.numel() for _, t in inputs))
    converted, stored = [], []
    for name, t in inputs:
        if t.dtype not in _TORCH_DTYPES:
            raise DatasetError(f"input {name!r} has dtype {str(t.dtype).removeprefix('torch.')}; allowed: "
                               "float16/32/64, bfloat16, int8/16/32/64, uint8, bool")
        stored.append(str(t.dtype).removeprefix("torch."))
        # bool counts as 0/1 features (float32); integer inputs (token ids, indices) stay integers
        t = t.to(torch.float32) if t.is_floating_point() or t.dtype == torch.bool else t.to(torch.int64)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise DatasetError(f"input {name!r} contains NaN or infinite values (after conversion to float32)")
        converted.append((name, t))
    return converted, stored, (None if labels is None else _check_labels(labels)), texts


def sniff_dataset(path: Path) -> dict:
    """Detect the format by content, validate everything, return a JSON-able summary: format, samples,
    inputs [{name, shape (per sample), dtype (as jobs get it), stored_dtype}], text, labels."""
    path = Path(path)
    fmt = _detect(path)
    inputs, stored, labels, texts = _read_checked(path, fmt)
    return {
        "format": fmt,
        "samples": len(texts) if texts is not None else int(inputs[0][1].shape[0]),
        "inputs": [{"name": n, "shape": list(t.shape[1:]), "dtype": str(t.dtype).removeprefix("torch."),
                    "stored_dtype": s} for (n, t), s in zip(inputs, stored)],
        "text": texts is not None,
        "labels": None if labels is None else {"dtype": "int64", "min": int(labels.min()), "max": int(labels.max()),
                                              "classes": int(labels.max()) + 1},
    }


def load_dataset(path: Path, fmt: str, *, tokenizer=None, max_length: int = 128) -> TensorData:
    """Full load for a job, with every sniff check again (the file is still hostile). Floating and bool
    inputs -> float32, integer inputs -> int64; JSONL -> (input_ids, attention_mask) via `tokenizer`."""
    path = Path(path)
    found = _detect(path)
    if found != fmt:
        raise DatasetError(f"the dataset file is {found}, not {fmt} (was it replaced?)")
    if fmt == "jsonl" and tokenizer is None:
        raise DatasetError(NO_TOKENIZER)
    inputs, _, labels, texts = _read_checked(path, fmt)
    if texts is None:
        return TensorData(tuple(t for _, t in inputs), labels)
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return TensorData((enc["input_ids"].to(torch.int64), enc["attention_mask"].to(torch.int64)), labels)


# ---------------------------------------------------------------- datasets against models

def _architecture(model_summary: dict, model_options: dict) -> str | None:
    return model_summary.get("architecture") or model_options.get("architecture")


def _sample_shape(shape) -> list | None:
    """[batch, ...] -> per-sample dims; dynamic dims (None, "seq") become None (anything matches)."""
    if not isinstance(shape, (list, tuple)) or not shape:
        return None
    return [d if type(d) is int and d >= 0 else None for d in shape[1:]]


def expected_inputs(model_summary: dict, model_options: dict) -> list[list[int]] | str | None:
    """Per-sample input shapes a model takes (None dims: dynamic), "text" for Hugging Face folders, or None
    when unknown (the worker then finds out at load time)."""
    model_summary, model_options = model_summary or {}, model_options or {}
    if model_summary.get("format") == "hf-folder" or model_options.get("hf_config"):
        return "text"
    signature = (model_summary.get("inspection") or {}).get("inputs")
    if isinstance(signature, list) and signature:
        shapes = [_sample_shape(item.get("shape")) if isinstance(item, dict) else None for item in signature]
        if all(s is not None for s in shapes):
            return shapes
    name = _architecture(model_summary, model_options)
    if name:
        from compression.formats.architectures import get_architecture
        try:
            return [list(get_architecture(name).input_shape)]
        except KeyError:
            pass
    many = model_options.get("input_shapes")
    many = list(many.values()) if isinstance(many, dict) else many   # ONNX: {input name: shape}
    if model_options.get("input_shape") is not None:
        many = [model_options["input_shape"]]
    shapes = [_sample_shape(s) for s in many] if isinstance(many, list) and many else [None]
    return shapes if all(s is not None for s in shapes) else None


@lru_cache(maxsize=None)
def _builtin_classes(name: str) -> int | None:
    from compression.formats.architectures import build_architecture
    try:
        linears = [m for m in build_architecture(name, "meta").modules() if isinstance(m, torch.nn.Linear)]
    except KeyError:
        return None
    return linears[-1].out_features if linears else None


def check_dataset_against_model(dataset_summary: dict, model_summary: dict, model_options: dict,
                                role: str) -> list[str]:
    """Problems for a 422 at job submit, each prefixed "<role> dataset: "; [] when the data fits the model."""
    model_summary, model_options = model_summary or {}, model_options or {}
    p = f"{role} dataset: "
    static = (model_summary.get("inspection") or {}).get("static_batch")
    if static:
        from compression.formats.torch_export import static_batch_problem
        return [p + static_batch_problem(static)]
    expected = expected_inputs(model_summary, model_options)
    if dataset_summary.get("text"):
        if expected != "text":
            return [p + "text (JSONL) data needs a model with a tokenizer (a Hugging Face folder upload); "
                        "this model has none"]
    elif expected == "text":
        return [p + "the model is a text model (Hugging Face folder): send JSONL, one "
                    '{"text": ..., "label": ...} object per line']
    problems = []
    inputs = dataset_summary.get("inputs") or []
    if isinstance(expected, list):
        if len(inputs) != len(expected):
            problems.append(p + f"the model takes {len(expected)} input(s), the dataset has {len(inputs)} "
                                f"({', '.join(i['name'] for i in inputs)})")
        else:
            flattens = _architecture(model_summary, model_options) == "lenet-300-100"   # an MLP: flattens its input
            for item, want in zip(inputs, expected):
                got = item["shape"]
                same = len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want))
                if not same and not (flattens and None not in want and math.prod(got) == math.prod(want)):
                    shown = [w if w is not None else "any" for w in want]
                    problems.append(p + f"input {item['name']!r} has per-sample shape {got}, "
                                        f"the model expects {shown}")
    labels = dataset_summary.get("labels")
    classes = (model_summary.get("inspection") or {}).get("output_features")
    if not classes and _architecture(model_summary, model_options):
        classes = _builtin_classes(_architecture(model_summary, model_options))
    if labels and classes and labels["classes"] > classes:
        problems.append(p + f"labels go up to {labels['max']} but the model has {classes} outputs "
                            f"(class ids must be 0..{classes - 1})")
    return problems
