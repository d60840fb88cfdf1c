"""torch.export .pt2 archives.

torch.export.load is NOT safe on hostile files: it unpickles weights/constants marked
use_pickle, custom and opaque objects, falls back to weights_only=False for example
inputs, loads AOTInductor shared libraries, exec()s guards_code and hands symbolic
expressions to sympy (eval). So `check_archive` allow-lists a plain program first (static
shapes, or dynamic ones whose every symbolic expression passes `check_expression`), and only
then is torch.export.load called.
"""
from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from pathlib import Path

import torch

from compression.formats._errors import ModelFormatError
from compression.formats.limits import MAX_JSON_MEMBER, MAX_SAMPLE_INPUT_BYTES, MAX_TENSORS
from compression.formats.summary import TensorMeta
from compression.formats.torch_zip import TorchArchive

_FIXED = {"archive_format", "archive_version", "byteorder", "version", ".data/version",
          ".data/serialization_id", "models/model.json", "data/sample_inputs/model.pt",
          "data/weights/model_weights_config.json", "data/constants/model_constants_config.json"}
_PAYLOAD = re.compile(r"data/(weights/weight_|constants/tensor_)\d+")
_TARGET_PREFIXES = ("torch.ops.aten.", "_operator.")
_DENIED_TARGETS = ("from_file",)

# serialized ScalarType -> torch dtype; only plain numeric types
_DTYPES = {1: torch.uint8, 2: torch.int8, 3: torch.int16, 4: torch.int32, 5: torch.int64, 6: torch.float16,
           7: torch.float32, 8: torch.float64, 12: torch.bool, 13: torch.bfloat16}


def _refuse(why: str) -> ModelFormatError:
    return ModelFormatError(f"torch.export archive refused: {why}. Only plain programs of ATen ops saved with "
                            "torch.export.save are accepted (static shapes, or dynamic dimensions declared with "
                            "torch.export.Dim)")


# Symbolic shapes arrive as sympy source (srepr, e.g. "Mul(Integer(2), Symbol('s77', positive=True,
# integer=True))") that torch hands to sympy's eval. Python's own parser (ast, which runs nothing)
# reads them here and only this arithmetic is let through; sympy is never asked first.
_SYMBOL_NAME = re.compile(r"[a-z][a-z0-9_]{0,15}")
_SYMBOL_FLAGS = {"positive", "integer", "nonnegative", "real", "finite"}
_SYMPY_CALLS = {"Add", "Mul", "FloorDiv", "Min", "Max"}
_BIN_OPS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv)
MAX_EXPRESSION_CHARS = 2000
MAX_SYMBOLS = 64


def check_expression(text: object, symbols: set[str]) -> None:
    """Symbols declared in range_constraints, integers, + - * //, Min, Max; anything else is refused."""
    if not isinstance(text, str) or len(text) > MAX_EXPRESSION_CHARS:
        raise _refuse("a symbolic shape expression is not a short string")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _refuse(f"symbolic shape expression {text[:80]!r} does not parse") from None
    stack = [tree.body]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) < 2**63:
            continue
        if isinstance(node, ast.Name) and node.id in symbols:
            continue
        if isinstance(node, ast.BinOp) and isinstance(node.op, _BIN_OPS):
            stack += [node.left, node.right]
            continue
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            stack.append(node.operand)
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name, args, kwargs = node.func.id, node.args, node.keywords
            if name == "Symbol" and len(args) == 1 and isinstance(args[0], ast.Constant) \
                    and args[0].value in symbols and all(
                        k.arg in _SYMBOL_FLAGS and isinstance(k.value, ast.Constant) and type(k.value.value) is bool
                        for k in kwargs):
                continue
            if name == "Integer" and len(args) == 1 and not kwargs:
                arg = args[0].operand if isinstance(args[0], ast.UnaryOp) and isinstance(args[0].op, ast.USub) \
                    else args[0]
                if isinstance(arg, ast.Constant) and type(arg.value) is int and abs(arg.value) < 2**63:
                    continue
            if name in _SYMPY_CALLS and args and not kwargs:
                stack += args
                continue
        raise _refuse(f"symbolic shape expression {text[:80]!r} uses something other than declared symbols, "
                      "integers, + - * //, Min and Max")


def _declared_symbols(constraints: object) -> set[str]:
    """range_constraints: {symbol: {"min_val": int, "max_val": int | None}} and nothing else."""
    if constraints in (None, {}):
        return set()
    if not isinstance(constraints, dict) or len(constraints) > MAX_SYMBOLS:
        raise _refuse("its range constraints are malformed")
    for name, bounds in constraints.items():
        if not _SYMBOL_NAME.fullmatch(name) or not isinstance(bounds, dict) \
                or set(bounds) - {"min_val", "max_val"} \
                or not all(v is None or type(v) is int for v in bounds.values()):
            raise _refuse(f"range constraint {str(name)[:40]!r} is not a symbol with integer bounds")
    return set(constraints)


def _json(zf: zipfile.ZipFile, archive: TorchArchive, name: str):
    try:
        return json.loads(archive.read(zf, name, MAX_JSON_MEMBER))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(f"{name} is not valid JSON ({exc})") from None


def _int_list(items) -> list[int]:
    if not isinstance(items, list) or not all(isinstance(i, dict) and type(i.get("as_int")) is int for i in items):
        raise _refuse("tensor sizes/strides must be static integers")
    return [i["as_int"] for i in items]


def _payloads(zf, archive: TorchArchive, config_name: str, folder: str, kind: str) -> list[TensorMeta]:
    if config_name not in archive.members:
        return []
    config = _json(zf, archive, config_name)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict) or len(entries) > MAX_TENSORS:
        raise _refuse(f"malformed {config_name}")
    metas = []
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise _refuse(f"{kind} {fqn!r} is pickled")
        path = meta.get("path_name")
        if not isinstance(path, str) or not _PAYLOAD.fullmatch(folder + path):
            raise _refuse(f"{kind} {fqn!r} is not a plain tensor payload")
        tm = meta.get("tensor_meta") or {}
        dtype = _DTYPES.get(tm.get("dtype"))
        if dtype is None:
            raise _refuse(f"{kind} {fqn!r} has an unsupported dtype")
        sizes, strides = _int_list(tm.get("sizes")), _int_list(tm.get("strides"))
        offset = _int_list([tm.get("storage_offset")])[0]
        if len(sizes) != len(strides) or min([*sizes, *strides, offset], default=0) < 0:
            raise _refuse(f"{kind} {fqn!r} has an invalid layout")
        # bytes the strided view touches must exist in the record (torch would allocate zeros otherwise)
        needed = 0 if 0 in sizes else (offset + 1 + sum((s - 1) * st for s, st in zip(sizes, strides)))
        info = archive.members.get(folder + path)
        if needed and (info is None or info.file_size < needed * dtype.itemsize):
            raise _refuse(f"{kind} {fqn!r} claims more bytes than its payload holds")
        metas.append(TensorMeta(fqn, tuple(sizes), str(dtype).removeprefix("torch."), bool(meta.get("is_param"))))
    return metas


def _check_program(program: dict) -> None:
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise _refuse("models/model.json is not a serialized ExportedProgram")
    if program.get("guards_code"):
        raise _refuse("it carries guard code (Python that torch would exec)")
    symbols = _declared_symbols(program.get("range_constraints"))
    graph = program["graph_module"].get("graph") or {}
    for key in ("sym_bool_values", "sym_float_values", "custom_obj_values"):
        if graph.get(key):
            raise _refuse(f"its graph has {key}")
    stack = [program["graph_module"]]
    while stack:   # every node, including those of nested subgraphs
        item = stack.pop()
        if isinstance(item, dict):
            if "expr_str" in item:
                check_expression(item["expr_str"], symbols)
            target = item.get("target")
            if isinstance(target, str) and "inputs" in item:
                if not target.startswith(_TARGET_PREFIXES) or any(d in target for d in _DENIED_TARGETS):
                    raise _refuse(f"operator {target!r} is not allowed")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_sample_inputs(zf, archive: TorchArchive) -> None:
    # torch falls back to weights_only=False if this fails, so it must load with weights_only=True
    data = archive.read(zf, "data/sample_inputs/model.pt", MAX_SAMPLE_INPUT_BYTES)
    if not data:
        return
    try:
        obj = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:
        raise _refuse(f"its example inputs are not plain tensors ({type(exc).__name__})") from None
    leaves = torch.utils._pytree.tree_leaves(obj)
    if not isinstance(obj, tuple) or not all(isinstance(x, (torch.Tensor, int, float, bool)) for x in leaves):
        raise _refuse("its example inputs are not plain tensors")


def check_archive(zf: zipfile.ZipFile, archive: TorchArchive) -> list[TensorMeta]:
    """Allow-list the archive; returns the weights' metadata (cheap: JSON only)."""
    extra = sorted(n for n in archive.members if n not in _FIXED and not _PAYLOAD.fullmatch(n))
    if extra:
        raise _refuse(f"unexpected member(s) {', '.join(extra[:3])} (AOTInductor, pickled or custom objects, "
                      "or more than one program)")
    if archive.read(zf, "archive_format", 16).strip() != b"pt2" or "models/model.json" not in archive.members:
        raise _refuse("it is not a single-program pt2 archive")
    _check_program(_json(zf, archive, "models/model.json"))
    weights = _payloads(zf, archive, "data/weights/model_weights_config.json", "data/weights/", "weight")
    _payloads(zf, archive, "data/constants/model_constants_config.json", "data/constants/", "constant")
    if "data/sample_inputs/model.pt" in archive.members:
        _check_sample_inputs(zf, archive)
    return weights


def load_program(path: Path):
    """torch.export.load, only after check_archive passed on the same file."""
    try:
        return torch.export.load(str(path))
    except Exception as exc:
        raise ModelFormatError(f"torch.export could not load the archive: {type(exc).__name__}: {exc}"[:500]) from None


def input_signature(program) -> list[dict]:
    """The user inputs as the program declares them: name, shape (a symbol's name where a dim is dynamic),
    dtype, dynamic_dims."""
    names = set(program.graph_signature.user_inputs)
    found = []
    for node in program.graph.nodes:
        val = node.meta.get("val") if node.op == "placeholder" and node.name in names else None
        if isinstance(val, torch.Tensor):
            shape = [d if type(d) is int else str(d) for d in val.shape]
            found.append({"name": node.name, "shape": shape, "dtype": str(val.dtype).removeprefix("torch."),
                          "dynamic_dims": [i for i, d in enumerate(shape) if type(d) is not int]})
    return found


def static_batch_problem(batch: int) -> str:
    return (f"the .pt2 program was exported with a fixed batch of {batch}, so it cannot run on a dataset's "
            "batches; export it with a dynamic batch: torch.export.export(model, args, dynamic_shapes="
            "{\"x\": {0: torch.export.Dim(\"batch\")}}) (name the argument as forward does), then upload it again")
