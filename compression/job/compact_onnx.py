"""A runnable ONNX file whose size tracks the compression (`model.compact.onnx`).

The job's dense `model.onnx` holds the compressed weights as float32. Here each weight initializer is
stored the way the compression left it, with standard ONNX ops rebuilding the float tensor inside the
graph, so onnxruntime (or any ONNX runtime) runs it with nothing of modelpress installed:

- integer codes + scales (the `affine` codec: per tensor, per channel, or blocked groups; binary weights'
  +-1 codes): `DequantizeLinear` on an int8/uint8 (or int4/uint4/int16, opset 21) initializer;
- values a 16-bit float holds exactly (fp16 / bf16 stages): a float16 / bfloat16 initializer and a `Cast`;
- few distinct values (weight sharing, binary/ternary, pruned + shared): `Gather` from a float table
  with uint8 (or uint4) indices;
- mostly zeros (pruning, Deep Compression): only the nonzero entries, as uint8 gaps between positions
  (a gap over 255 takes filler entries of value 0, as the container's relative indices do) and their
  values (table indices, or float32), scattered into zeros in the graph: `CumSum` of the gaps gives the
  positions, `ScatterElements` writes the values.
Each weight takes the smallest of the forms that apply; all rebuild the exact float values of the dense
file. Anything else stays float32 and is listed with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compression.coding.encoding import Encoded, grid

MAX_TABLE = 256


@dataclass
class _Form:
    kind: str                    # "dequantize" | "gather" | "sparse"
    values: np.ndarray           # integer codes or table indices (sparse: per entry), or float values
    bits: int                    # 4 or 8 (32: float values, sparse only)
    signed: bool
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    axis: int | None = None
    block_size: int | None = None
    table: np.ndarray | None = None
    gaps: np.ndarray | None = None       # sparse: uint8 distance from the previous entry's position
    shape: tuple | None = None           # sparse: the weight's shape

    @property
    def nbytes(self) -> int:
        packed = self.values.size * self.bits // 8 + 1
        extra = sum(a.nbytes for a in (self.scale, self.zero_point, self.table, self.gaps) if a is not None)
        return packed + extra


def _affine_form(enc: Encoded | None, dims: tuple[int, ...], transposed: bool = False) -> _Form | None:
    """Integer codes and scales from the container's affine encoding, in the initializer's layout
    (`transposed`: the exporter stored the 2-D weight as [in, out])."""
    # a single-direction recurrent W/R ([1, gates*hidden, in]) is held as [gates*hidden, in]: one more axis
    lifted = len(dims) == 3 and dims[0] == 1 and tuple(enc.shape) == dims[1:] if enc is not None else False
    if enc is None or (tuple(enc.shape) != (dims[::-1] if transposed else dims) and not lifted):
        return None
    on_grid = grid(enc)   # affine codes, or binary weights as codes +-1
    if on_grid is None:
        return None
    codes = on_grid.codes.T if transposed else on_grid.codes
    lo, hi = int(codes.min(initial=0)), int(codes.max(initial=0))
    zero = on_grid.zero_points
    if zero is not None:
        if not np.array_equal(zero, np.round(zero)):
            return None   # float zero points have no DequantizeLinear form
        zero = zero.astype(np.int64)
        lo, hi = min(lo, int(zero.min(initial=0))), max(hi, int(zero.max(initial=0)))
    signed = lo < 0
    def fits(b: int) -> bool:
        return -(1 << b - 1) <= lo and hi < 1 << b - 1 if signed else hi < 1 << b

    bits = next((b for b in (4, 8, 16) if fits(b)), None)   # 16: fixed point (DequantizeLinear int16, opset 21)
    if bits is None:
        return None
    scale, group = on_grid.scales, on_grid.group_size
    if lifted:
        codes = codes.reshape(dims)
        scale, zero = scale.reshape((1, *scale.shape)), None if zero is None else zero.reshape((1, *zero.shape))
        if group is not None:
            rows, cols = enc.shape
            shape = (1, rows, -(-cols // group))
            return _Form("dequantize", codes, bits, signed, scale.reshape(shape),
                         None if zero is None else zero.reshape(shape), axis=2, block_size=group)
        axis = on_grid.axis
        return _Form("dequantize", codes, bits, signed, scale.reshape(-1) if axis is not None else scale.reshape(()),
                     None if zero is None else (zero.reshape(-1) if axis is not None else zero.reshape(())),
                     axis=None if axis is None else axis + 1)
    if group is not None:   # blocks run along each row of the torch weight ([out, in])
        if len(dims) != 2:
            return None
        rows, cols = enc.shape
        shape = (rows, -(-cols // group))

        def lay(a):
            return None if a is None else (a.reshape(shape).T if transposed else a.reshape(shape))

        return _Form("dequantize", codes, bits, signed, lay(scale), lay(zero), axis=0 if transposed else 1,
                     block_size=group)
    axis = on_grid.axis
    if transposed and axis is not None:
        axis = 1 - axis
    if axis is None and scale.size != 1:
        return None
    return _Form("dequantize", codes, bits, signed, scale.reshape(-1) if axis is not None else scale.reshape(()),
                 None if zero is None else (zero.reshape(-1) if axis is not None else zero.reshape(())), axis=axis)


def _cast_form(weight: np.ndarray) -> _Form | None:
    """Values a 16-bit float holds exactly (fp16 / bf16 stages): stored as that type, `Cast` to float32."""
    if weight.dtype != np.float32:
        return None
    if np.array_equal(weight.astype(np.float16).astype(np.float32), weight, equal_nan=True):
        return _Form("cast", weight.astype(np.float16), 16, True)
    if not np.any(weight.view(np.uint32) & np.uint32(0xFFFF)):   # bfloat16: the top half of each float32
        return _Form("cast", (weight.view(np.uint32) >> np.uint32(16)).astype(np.uint16), 16, False)
    return None


def _table_form(weight: np.ndarray) -> _Form | None:
    """Few distinct values: an index per element into a float table (exact)."""
    table, indices = np.unique(weight, return_inverse=True)
    if table.size > MAX_TABLE:
        return None
    return _Form("gather", indices.reshape(weight.shape).astype(np.int64), 4 if table.size <= 16 else 8, False,
                 table=table.astype(weight.dtype))


MAX_GAP = 255


def _sparse_form(weight: np.ndarray) -> _Form | None:
    """Nonzero entries only: uint8 gaps (fillers of value 0 bridge longer ones) and per-entry values, as
    table indices when few distinct values remain (pruned + shared), else float32. Exact."""
    flat = weight.reshape(-1)
    nonzero = np.flatnonzero(flat)
    if nonzero.size * 2 > flat.size:   # a 1-byte gap per entry cannot pay off
        return None
    diffs = np.diff(np.concatenate([[-1], nonzero]))
    fillers = (diffs - 1) // MAX_GAP
    ends = np.cumsum(fillers + 1) - 1
    gaps = np.full(int(ends[-1]) + 1 if ends.size else 0, MAX_GAP, dtype=np.int64)
    gaps[ends] = diffs - MAX_GAP * fillers
    values = np.zeros(gaps.size, dtype=weight.dtype)
    values[ends] = flat[nonzero]
    table, indices = np.unique(values, return_inverse=True)
    if table.size <= MAX_TABLE:
        return _Form("sparse", indices.astype(np.int64), 4 if table.size <= 16 else 8, False,
                     table=table.astype(weight.dtype), gaps=gaps.astype(np.uint8), shape=weight.shape)
    return _Form("sparse", values, 32, True, gaps=gaps.astype(np.uint8), shape=weight.shape)


def _integer_tensor(name: str, values: np.ndarray, bits: int, signed: bool):
    from onnx import TensorProto, helper

    if bits == 16:
        return helper.make_tensor(name, TensorProto.INT16 if signed else TensorProto.UINT16, values.shape,
                                  values.astype(np.int16 if signed else np.uint16).tobytes(), raw=True)
    if bits == 8:
        dtype = np.int8 if signed else np.uint8
        return helper.make_tensor(name, TensorProto.INT8 if signed else TensorProto.UINT8, values.shape,
                                  values.astype(dtype).tobytes(), raw=True)
    flat = (values.reshape(-1) & 0xF).astype(np.uint8)   # two's complement nibbles for int4
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)   # first element in the low nibble
    return helper.make_tensor(name, TensorProto.INT4 if signed else TensorProto.UINT4, values.shape,
                              packed.tobytes(), raw=True)


def _replace(graph, name: str, form: _Form) -> list:
    """Initializers and nodes that rebuild `name` from its compact form."""
    from onnx import TensorProto, helper, numpy_helper

    if form.kind == "sparse":
        return _sparse_nodes(name, form)
    if form.kind == "cast":   # float16 (signed) or bfloat16 bits (unsigned)
        stored = helper.make_tensor(f"{name}::half", TensorProto.FLOAT16 if form.signed else TensorProto.BFLOAT16,
                                    form.values.shape, form.values.tobytes(), raw=True)
        return [stored], [helper.make_node("Cast", [stored.name], [name], to=TensorProto.FLOAT)]
    stored = _integer_tensor(f"{name}::q", form.values, form.bits, form.signed)
    if form.kind == "gather":
        return [stored, numpy_helper.from_array(form.table, f"{name}::table")], [
            helper.make_node("Cast", [stored.name], [f"{name}::idx"], to=TensorProto.INT64),
            helper.make_node("Gather", [f"{name}::table", f"{name}::idx"], [name], axis=0)]
    inits = [stored, numpy_helper.from_array(form.scale.astype(np.float32), f"{name}::scale")]
    inputs = [stored.name, f"{name}::scale"]
    if form.zero_point is not None:
        inits.append(_integer_tensor(f"{name}::zero", form.zero_point, form.bits, form.signed))
        inputs.append(f"{name}::zero")
    attrs = {} if form.axis is None else {"axis": form.axis}
    if form.block_size is not None:
        attrs["block_size"] = form.block_size
    return inits, [helper.make_node("DequantizeLinear", inputs, [name], **attrs)]


def _describe(f: _Form) -> str:
    if f.kind == "cast":
        return "cast float16" if f.signed else "cast bfloat16"
    if f.kind == "sparse":
        return f"sparse: {f.gaps.size} entries, uint8 gaps + " + (f"gather uint{f.bits}" if f.table is not None
                                                                   else "float32 values")
    return f"{f.kind} {'u' if not f.signed else ''}int{f.bits}" + (f" blocks of {f.block_size}" if f.block_size else "")


def _sparse_nodes(name: str, form: _Form) -> tuple[list, list]:
    """positions = CumSum(gaps) - 1; values by Gather from the table (or stored); ScatterElements into zeros."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(form.gaps, f"{name}::gaps"),
             numpy_helper.from_array(np.array(0, np.int64), f"{name}::axis0"),
             numpy_helper.from_array(np.array([1], np.int64), f"{name}::one"),
             numpy_helper.from_array(np.array([int(np.prod(form.shape))], np.int64), f"{name}::numel"),
             numpy_helper.from_array(np.array(form.shape, np.int64), f"{name}::shape")]
    nodes = [helper.make_node("Cast", [f"{name}::gaps"], [f"{name}::gaps64"], to=TensorProto.INT64),
             helper.make_node("CumSum", [f"{name}::gaps64", f"{name}::axis0"], [f"{name}::ends"]),
             helper.make_node("Sub", [f"{name}::ends", f"{name}::one"], [f"{name}::pos"])]
    if form.table is not None:
        inits += [_integer_tensor(f"{name}::q", form.values, form.bits, False),
                  numpy_helper.from_array(form.table, f"{name}::table")]
        nodes += [helper.make_node("Cast", [f"{name}::q"], [f"{name}::idx"], to=TensorProto.INT64),
                  helper.make_node("Gather", [f"{name}::table", f"{name}::idx"], [f"{name}::values"], axis=0)]
    else:
        inits.append(numpy_helper.from_array(form.values, f"{name}::values"))
    zero = numpy_helper.from_array(np.zeros(1, dtype=form.table.dtype if form.table is not None
                                            else form.values.dtype))
    nodes += [helper.make_node("ConstantOfShape", [f"{name}::numel"], [f"{name}::zeros"], value=zero),
              helper.make_node("ScatterElements", [f"{name}::zeros", f"{name}::pos", f"{name}::values"],
                               [f"{name}::flat"], axis=0),
              helper.make_node("Reshape", [f"{name}::flat", f"{name}::shape"], [name])]
    return inits, nodes


def _matcher(weights: dict[str, np.ndarray]):
    """Which compressed weight an initializer holds: by name (a text model's export prefixes `model.`), else
    by value, as is or transposed (exporters fold a Linear's transpose into a new initializer)."""
    by_shape: dict[tuple, list[str]] = {}
    for name, w in weights.items():
        by_shape.setdefault(tuple(w.shape), []).append(name)

    def match(name: str, arr: np.ndarray) -> tuple[str, bool] | None:
        for candidate in (name, name.removeprefix("model.")):
            if candidate in weights and weights[candidate].shape == arr.shape:
                return candidate, False
        for candidate in by_shape.get(tuple(arr.shape), []):
            if np.array_equal(weights[candidate], arr):
                return candidate, False
        if arr.ndim == 2:
            for candidate in by_shape.get(tuple(arr.shape[::-1]), []):
                if np.array_equal(weights[candidate].T, arr):
                    return candidate, True
        return None

    return match


def write_compact_onnx(dense: Path, encodings: dict[str, Encoded], out: Path,
                       weights: dict[str, np.ndarray] | None = None, transposed: frozenset[str] = frozenset()) -> dict:
    """Rewrite `dense` into `out`. -> {"forms": {initializer: form}, "float": {initializer: reason}, "opset",
    "written"} (nothing is written when no weight has a compact form). Raises on failure (the caller
    records the reason and drops the file)."""
    import onnx
    from onnx import TensorProto, numpy_helper, version_converter

    model = onnx.load(str(dense))
    plans: dict[str, _Form] = {}
    kept: dict[str, str] = {}
    match = _matcher(weights or {})
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    for init in model.graph.initializer:
        if init.data_type != TensorProto.FLOAT or len(init.dims) < 2:
            continue
        weight = numpy_helper.to_array(init)
        # ONNX uploads: encodings are keyed by initializer name, MatMul weights held as [out, in] (`transposed`)
        found = match(init.name, weight) if weights else \
            ((init.name, init.name in transposed) if init.name in encodings else None)
        if found is None and init.name.startswith("val_"):
            continue   # an exporter constant, not a weight
        enc = encodings.get(found[0]) if found else None
        forms = [f for f in (_affine_form(enc, tuple(init.dims), found[1]) if found else None, _table_form(weight),
                             _sparse_form(weight) if opset >= 11 else None, _cast_form(weight)) if f is not None]
        form = min(forms, key=lambda f: f.nbytes) if forms else None
        if form is None:
            kept[init.name] = ("no integer or shared-value encoding in a layout DequantizeLinear can say (float32 "
                               "in every runtime)" if found else "not a weight of the compressed model")
        elif form.nbytes >= weight.nbytes:
            kept[init.name] = "the compact form would not be smaller"
        else:
            plans[init.name] = form
    if not plans:   # the dense file is already the smallest runnable form: no duplicate
        return {"forms": {}, "float": kept, "opset": opset, "written": False}
    needs_21 = any(f.bits == 4 or f.block_size is not None or (f.kind == "dequantize" and f.bits == 16)
                   for f in plans.values())
    if needs_21 and opset < 21:
        try:
            model = version_converter.convert_version(model, 21)
            opset = 21
        except Exception:   # no converter path: keep only what opset 13+ can say (8-bit, per axis)
            for name in [n for n, f in plans.items() if f.block_size is not None or (f.kind == "dequantize"
                                                                                       and f.bits == 16)]:
                kept[name] = f"blocked or 16-bit DequantizeLinear needs opset 21; the model is opset {opset}"
                del plans[name]
            for f in plans.values():
                f.bits = 8 if f.bits == 4 else f.bits
    if opset < 13:   # DequantizeLinear's per-channel `axis` arrived in opset 13 (older exporters write 11, 12)
        model = version_converter.convert_version(model, 13)
        opset = 13
    names = set(plans)
    keep = [i for i in model.graph.initializer if i.name not in names]
    new_inits, new_nodes = [], []
    for name, form in plans.items():
        inits, nodes = _replace(model.graph, name, form)
        new_inits += inits
        new_nodes += nodes
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep + new_inits)
    graph_inputs = [i for i in model.graph.input if i.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(graph_inputs)
    nodes = list(model.graph.node)
    for node in nodes:   # exporter debug info (stack traces per node): not needed to run, often most of the bytes
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.node[:]
    model.graph.node.extend(new_nodes + nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return {"forms": {name: _describe(f) for name, f in plans.items()},
            "float": kept, "opset": opset, "written": True}
