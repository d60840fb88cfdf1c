"""ONNX models (`.onnx`, one protobuf ModelProto): detection, checks, and in-place weight compression.

An ONNX upload is never converted to torch. Its MatMul/Gemm/Conv weight initializers are wrapped as
parameters of a small holder `nn.Module` (`OnnxModel.holder`) so the library's weight-only stages
(quantize, magnitude prune, share, huffman) run on them unchanged; the decoded values are then written
back into a copy of the graph. Graphs run in onnxruntime only.

Refused: files over the protobuf limit, anything that does not parse as a ModelProto with a graph, and
tensors stored as *external data* (a path in an upload could point anywhere on the worker).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from compression.formats._errors import ModelFormatError
from compression.formats.inputs import SAMPLE_BATCH, random_input
from compression.formats.limits import MAX_INPUT_ELEMENTS, MAX_TENSORS
from compression.formats.summary import TensorMeta, build_summary

ONNX = "onnx"
MAX_ONNX_BYTES = (2 << 30) - 1     # protobuf's own limit for one message
# stages that only touch weight values (no forward pass, no torch modules)
# (int8 also writes model.int8.onnx with onnxruntime's int8 kernels, from the graph itself)
ONNX_STAGES = frozenset({"quantize", "prune", "share", "huffman", "int8"})
# ModelProto field tags that may follow ir_version (field 1, varint) in a serialized model
_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0x7A, 0x82}
_FLOAT_TYPES = {1: torch.float32, 10: torch.float16, 11: torch.float64}   # TensorProto FLOAT, FLOAT16, DOUBLE
_INPUT_TYPES = {1: torch.float32, 10: torch.float16, 11: torch.float64, 7: torch.int64, 6: torch.int32,
                9: torch.bool}


def looks_like_onnx(head: bytes) -> bool:
    """Cheap check on the first bytes: field 1 (ir_version, a small varint), then another ModelProto field."""
    if len(head) < 3 or head[0] != 0x08 or not 1 <= head[1] <= 32:
        return False
    return head[2] in _NEXT_TAGS


def _varint(f) -> int:
    value = 0
    for shift in range(0, 70, 7):
        byte = f.read(1)
        if not byte:
            raise EOFError
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    raise ValueError("varint too long")


def check_framing(path: Path) -> dict:
    """The API's check: walks the top-level ModelProto fields by tag and length only, seeking over the graph,
    so a truncated or forged file is refused without reading it into memory (the worker parses it fully).
    -> a summary with what is known without parsing."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise ModelFormatError(f"ONNX file is too large ({size} > {MAX_ONNX_BYTES} bytes, the protobuf limit); "
                               "external-data ONNX is not accepted")
    has_graph, fields = False, 0
    with open(path, "rb") as f:
        try:
            while f.tell() < size:
                tag = _varint(f)
                number, wire = tag >> 3, tag & 7
                if number == 0 or wire not in (0, 1, 2, 5):
                    raise ValueError(f"bad field tag {tag}")
                if fields > MAX_TENSORS:
                    raise ValueError("too many top-level fields")
                if wire == 0:
                    _varint(f)
                else:   # a forged length may exceed any file offset: check before seeking
                    length = 8 if wire == 1 else 4 if wire == 5 else _varint(f)
                    if f.tell() + length > size:
                        raise EOFError
                    f.seek(length, 1)
                has_graph |= number == 7 and wire == 2
                fields += 1
        except (EOFError, ValueError) as exc:
            raise ModelFormatError("not a readable ONNX model (truncated or corrupt protobuf"
                                   f"{': ' + str(exc) if str(exc) else ''})") from None
    if not has_graph:
        raise ModelFormatError("not a usable ONNX model: no graph (truncated?)")
    return build_summary(None, None, format=ONNX)


def parse(path: Path):
    """-> onnx.ModelProto, external data not loaded (refused), structure checked."""
    import onnx
    from google.protobuf.message import DecodeError

    size = Path(path).stat().st_size
    if size > MAX_ONNX_BYTES:
        raise ModelFormatError(f"ONNX file is too large ({size} > {MAX_ONNX_BYTES} bytes, the protobuf limit); "
                               "external-data ONNX is not accepted")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelFormatError(f"not a readable ONNX model (truncated or corrupt protobuf): "
                               f"{type(exc).__name__}: {exc}"[:500]) from None
    if model.ir_version < 3 or not model.HasField("graph") or not model.graph.node or not model.graph.output:
        raise ModelFormatError("not a usable ONNX model: no ir_version, graph, nodes or outputs (truncated?)")
    _refuse_external_data(model)
    if len(model.graph.initializer) > MAX_TENSORS:
        raise ModelFormatError(f"ONNX graph has too many initializers (> {MAX_TENSORS})")
    return model


def _tensors(model):
    """Every TensorProto in the model: initializers, constants and attributes, in subgraphs and functions too."""
    def graph_tensors(g):
        yield from g.initializer
        for s in g.sparse_initializer:
            yield s.values
            yield s.indices
        yield from nodes(g.node)

    def nodes(ns):
        for n in ns:
            for a in n.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("sparse_tensor"):
                    yield a.sparse_tensor.values
                    yield a.sparse_tensor.indices
                if a.HasField("g"):
                    yield from graph_tensors(a.g)
                for g in a.graphs:
                    yield from graph_tensors(g)

    yield from graph_tensors(model.graph)
    for f in model.functions:
        yield from nodes(f.node)
    for t in model.training_info:
        for g in (t.initialization, t.algorithm):
            yield from graph_tensors(g)


def _subgraphs(scope: str, graph):
    """(scope, subgraph) of each If / Loop / Scan attribute of `graph`'s nodes. A scope names where the subgraph
    sits ("<node>.<attribute>", nested with "/"), so its initializers get container names that stay unique
    where two branches reuse one name."""
    for i, node in enumerate(graph.node):
        for attr in node.attribute:
            subs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for k, sub in enumerate(subs):
                where = f"{node.name or f'{node.op_type}_{i}'}.{attr.name}" + (f"[{k}]" if attr.graphs else "")
                yield (f"{scope}/{where}" if scope else where), sub


def graphs(model) -> list[tuple[str, object]]:
    """The top-level graph (scope "") and every subgraph, depth first."""
    found = []

    def walk(scope: str, graph) -> None:
        found.append((scope, graph))
        for sub_scope, sub in _subgraphs(scope, graph):
            walk(sub_scope, sub)

    walk("", model.graph)
    return found


def scoped(scope: str, name: str) -> str:
    """The container / holder name of an initializer: its own name at the top level, scope::name below."""
    return f"{scope}::{name}" if scope else name


def all_initializers(model):
    """(scoped name, TensorProto) of every initializer, subgraphs included."""
    for scope, graph in graphs(model):
        for init in graph.initializer:
            yield scoped(scope, init.name), init


def _refuse_external_data(model) -> None:
    from onnx import TensorProto

    for t in _tensors(model):
        if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
            where = next((e.value for e in t.external_data if e.key == "location"), "?")
            raise ModelFormatError(f"ONNX tensor {t.name!r} refers to external data ({where!r}); upload a "
                                   "single-file ONNX model (weights inside the .onnx, e.g. external_data=False)")


def _dims(value_info) -> list:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def graph_inputs(model) -> list:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


@dataclass(frozen=True)
class Target:
    name: str          # initializer name (the container's tensor name)
    key: str           # holder state_dict name
    transposed: bool   # MatMul / Gemm(transB=0): held as [out, in] so axis 0 is the output channel
    module_type: str   # "Linear" / "Conv2d" / ...


_RECURRENT = ("LSTM", "GRU", "RNN")


def _use(node, index: int, nd: int) -> tuple[bool, str] | None:
    """(held transposed, layer type) of an initializer at input `index` of `node`, or None (not a weight)."""
    if index == 1 and node.op_type == "MatMul" and nd == 2:
        return True, "Linear"
    if index == 1 and node.op_type == "Gemm" and nd == 2:
        return not next((a.i for a in node.attribute if a.name == "transB"), 0), "Linear"
    if index == 1 and node.op_type == "Conv" and nd >= 3:
        return False, f"Conv{nd - 2}d"
    if index in (1, 2) and node.op_type in _RECURRENT and nd == 3:   # W / R: [directions, gates*hidden, in]
        return False, node.op_type
    return None


def find_targets(model) -> list[Target]:
    """Float initializers used as the weight input of MatMul (2-D), Gemm, Conv, or the W / R input of
    LSTM / GRU / RNN (held as 2-D [directions*gates*hidden, in]), in the top-level graph and in the
    subgraphs of If / Loop / Scan (a subgraph may use an initializer of an enclosing graph)."""
    uses: dict[str, set] = {}
    order: list[str] = []

    def walk(scope: str, graph, visible: dict) -> None:
        visible = {**visible, **{i.name: (scoped(scope, i.name), i) for i in graph.initializer}}
        order.extend(scoped(scope, i.name) for i in graph.initializer)
        for node in graph.node:
            for index, name in enumerate(node.input):
                key, init = visible.get(name, (None, None))
                if init is not None and init.data_type in _FLOAT_TYPES:
                    uses.setdefault(key, set()).add(_use(node, index, len(init.dims)))
        for sub_scope, sub in _subgraphs(scope, graph):
            walk(sub_scope, sub, visible)

    walk("", model.graph, {})
    targets, keys = [], set()
    for name in order:
        found = uses.get(name)
        if not found or len(found) != 1 or None in found:   # not a weight, or used in conflicting roles
            continue
        transposed, kind = next(iter(found))
        key = _holder_key(name, keys)
        keys.add(key)
        targets.append(Target(name, key, transposed, kind))
    return targets


def _holder_key(name: str, taken: set) -> str:
    """The initializer's own name when it is a torch-style "<module>.weight", else a sanitised one."""
    if name.endswith(".weight") and all(name.split(".")) and "::" not in name and name not in taken:
        return name
    base = name.replace(".", "_").replace("::", "__") or "w"
    key, i = f"{base}.weight", 1
    while key in taken:
        key, i = f"{base}_{i}.weight", i + 1
    return key


def _holder(targets: list[Target], values: dict[str, torch.Tensor]) -> torch.nn.Module:
    root = torch.nn.Module()
    for t in targets:
        mod = root
        for seg in t.key.split(".")[:-1]:
            child = mod._modules.get(seg)
            if child is None:
                child = torch.nn.Module()
                mod.add_module(seg, child)
            mod = child
        mod.original_name = t.module_type    # what base.weight_targets reports as the layer type
        mod.register_parameter("weight", torch.nn.Parameter(values[t.name], requires_grad=False))
    return root.eval()


def float_initializers(model) -> dict[str, torch.Tensor]:
    from onnx import numpy_helper

    return {name: torch.from_numpy(np.array(numpy_helper.to_array(i), copy=True))
            for name, i in all_initializers(model) if i.data_type in _FLOAT_TYPES}


def summarise(model) -> dict:
    from onnx import TensorProto

    metas = [TensorMeta(name, tuple(int(d) for d in i.dims), str(_FLOAT_TYPES[i.data_type]).split(".")[1])
             for name, i in all_initializers(model) if i.data_type in _FLOAT_TYPES]

    def io(v):
        return {"name": v.name, "shape": _dims(v),
                "dtype": TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()}

    return build_summary(metas, None, format=ONNX,
                         opset={o.domain or "ai.onnx": int(o.version) for o in model.opset_import},
                         inputs=[io(v) for v in graph_inputs(model)], outputs=[io(v) for v in model.graph.output],
                         weight_targets=[t.name for t in find_targets(model)][:500])


def sample_inputs(model, options: dict, seed: int) -> dict[str, np.ndarray]:
    """From the graph's input signature: a dynamic first dimension is the sample batch (8), other dynamic
    dimensions 1; options {"input_shape": [...]} (single input) or {"input_shapes": {name: [...]}} override."""
    inputs = graph_inputs(model)
    shapes = dict(options.get("input_shapes") or {})
    if options.get("input_shape") is not None:
        if len(inputs) != 1:
            raise ModelFormatError('options.input_shape needs a single-input graph; use {"input_shapes": '
                                   '{"<input name>": [...]}}')
        shapes[inputs[0].name] = options["input_shape"]
    values = options.get("input_values") or {}
    unknown = sorted(set(values) - {v.name for v in inputs})
    if unknown:
        raise ModelFormatError(f"options.input_values names {', '.join(map(repr, unknown))}, not an input of the "
                               f"graph (inputs: {', '.join(v.name for v in inputs)})")
    out, total = {}, 0
    for i, v in enumerate(inputs):
        elem = v.type.tensor_type.elem_type
        if elem not in _INPUT_TYPES:
            raise ModelFormatError(f"ONNX input {v.name!r} has an unsupported element type ({elem})")
        dims = _dims(v)
        given = shapes.get(v.name)
        if given is not None:
            if not isinstance(given, list) or len(given) != len(dims) or \
                    not all(type(d) is int and d > 0 for d in given) or \
                    any(isinstance(d, int) and d > 0 and d != g for d, g in zip(dims, given)):
                raise ModelFormatError(f"input shape for {v.name!r} must be {len(dims)} positive integers "
                                       f"fitting the graph's {dims}")
            shape = tuple(given)
        else:
            shape = tuple(d if isinstance(d, int) and d > 0 else (SAMPLE_BATCH if j == 0 else 1)
                          for j, d in enumerate(dims))
        total += int(np.prod(shape, dtype=np.int64))
        if total > MAX_INPUT_ELEMENTS:
            raise ModelFormatError(f"sample inputs would have more than {MAX_INPUT_ELEMENTS} elements")
        dtype = _INPUT_TYPES[elem]
        if v.name in values:
            out[v.name] = np.full(shape, values[v.name], dtype=torch.empty((), dtype=dtype).numpy().dtype)
            continue
        t = random_input(shape, torch.int64 if dtype is torch.bool else dtype, seed + i)
        out[v.name] = (t.bool() if dtype is torch.bool else t).numpy()
    return out


def guessed_dims_hint(model, options) -> str:
    """For an error message: which symbolic input dimensions the sample inputs guessed, and how to give them."""
    from compression.formats.options import as_dict

    given = as_dict(options).get("input_shapes") or {}
    guesses = []
    for v in graph_inputs(model):
        dims = _dims(v)
        if v.name in given or (len(graph_inputs(model)) == 1 and as_dict(options).get("input_shape")):
            continue
        if any(not (isinstance(d, int) and d > 0) for d in dims):
            shown = [d if isinstance(d, int) and d > 0 else f"{d or '?'}={SAMPLE_BATCH if j == 0 else 1}"
                     for j, d in enumerate(dims)]
            guesses.append(f"{v.name}: [{', '.join(map(str, shown))}]")
    if not guesses:
        return ""
    example = ", ".join(f'"{g.split(":")[0]}": [...]' for g in guesses)
    return (f". The sample inputs guessed symbolic dimensions ({'; '.join(guesses)}); if a guess is wrong, upload "
            f'again with options {{"input_shapes": {{{example}}}}} (every dimension, batch first)')


def session(model_bytes: bytes, exact: bool = False):
    """`exact`: basic graph optimizations only; the default level may fuse DequantizeLinear into integer
    kernels that quantize activations too (faster, not bit-faithful to the stored weights)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if exact:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # idle threads must not spin: they would steal the cores of whatever runs next (the next job, or the
    # torch model a latency comparison times right after this session)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def flatten(outputs: list, batch: int | None) -> torch.Tensor:
    """ORT outputs as [batch, features] float64 (as outputs.run does for torch models)."""
    leaves = [torch.from_numpy(np.asarray(o)).double() for o in outputs]
    if batch and all(t.ndim and t.shape[0] == batch for t in leaves):
        return torch.cat([t.reshape(batch, -1) for t in leaves], dim=1)
    return torch.cat([t.reshape(-1) for t in leaves]).reshape(1, -1)


def run_bytes(model_bytes: bytes, feeds: dict[str, np.ndarray], exact: bool = False) -> torch.Tensor:
    return run_session(session(model_bytes, exact=exact), feeds)


def run_session(sess, feeds: dict[str, np.ndarray]) -> torch.Tensor:
    """Every output of one run, flattened as `flatten` does (batch = the first input's first dimension)."""
    first = next(iter(feeds.values()), None)
    return flatten(sess.run(None, feeds), first.shape[0] if first is not None and first.ndim else None)


def with_weights(model, values: dict[str, torch.Tensor], transposed: set[str] = frozenset()):
    """A copy of `model` whose float initializers named in `values` hold those values (transposed back
    where stored as [out, in]); shapes and dtypes must match."""
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for name, init in all_initializers(out):
        if name not in values:
            continue
        v = values[name].detach()
        if name in transposed:
            v = v.t()
        if v.ndim == 2 and len(init.dims) == 3 and v.numel() == int(np.prod(init.dims)):   # recurrent W / R
            v = v.reshape(tuple(init.dims))
        arr = v.contiguous().numpy()
        if tuple(arr.shape) != tuple(init.dims) or init.data_type not in _FLOAT_TYPES \
                or v.dtype != _FLOAT_TYPES[init.data_type]:
            raise ModelFormatError(f"weights for {init.name!r} do not fit the ONNX initializer "
                                   f"({list(arr.shape)} {v.dtype} vs {list(init.dims)})")
        init.CopyFrom(numpy_helper.from_array(arr, init.name))
    return out


def rebuild_from_container(container: Path, original: Path):
    """decode_requires "program" for ONNX origins: the container's decoded weights written into the original
    (or the job's dense) ONNX graph. -> onnx.ModelProto."""
    from compression.coding.container import read_container

    state, manifest = read_container(container)
    origin = manifest.get("origin") or {}
    if origin.get("format") != ONNX:
        raise ModelFormatError("not a container of an ONNX model")
    graph = parse(original)
    hoist_weights(graph)   # as the job saw it: weights behind Constant/Transpose/Cast are initializers
    return with_weights(graph, state, set(origin.get("onnx_transposed") or []))


@dataclass
class OnnxModel:
    proto: object                          # onnx.ModelProto, checked
    targets: list[Target]
    holder: torch.nn.Module                # target weights as parameters ([out, in] for transposed ones)
    initial: dict[str, torch.Tensor]       # every float initializer, as uploaded
    feeds: dict[str, np.ndarray]           # sample inputs by graph input name
    extra: dict = field(default_factory=dict)

    def weights(self) -> dict[str, torch.Tensor]:
        """Float initializers in graph order, targets as held (after the stages have run on the holder)."""
        held = dict(self.holder.state_dict())
        by_name = {t.name: held[t.key] for t in self.targets}
        return {n: by_name.get(n, v) for n, v in self.initial.items()}

    @property
    def transposed(self) -> set[str]:
        return {t.name for t in self.targets if t.transposed}

    def compressed_proto(self):
        held = dict(self.holder.state_dict())
        return with_weights(self.proto, {t.name: held[t.key] for t in self.targets}, self.transposed)


def _held(value: torch.Tensor, target: Target) -> torch.Tensor:
    """As methods see a weight: rows are output units (MatMul transposed; recurrent W/R flattened to 2-D)."""
    if target.transposed:
        return value.t()
    return value.reshape(-1, value.shape[-1]) if target.module_type in _RECURRENT else value


_WEIGHT_OPS = {"MatMul", "Gemm", "Conv", *_RECURRENT}


def hoist_weights(model) -> int:
    """Weights that reach a MatMul/Gemm/Conv/recurrent node through a `Constant` node, a `Transpose` or a
    float `Cast` of an initializer become plain initializers (the same values at the same tensor name),
    so they can be compressed in place. Exporters emit all three, in subgraphs too. -> nodes folded."""
    return sum(_hoist_graph(graph) for _, graph in graphs(model))


def _hoist_graph(graph) -> int:
    from onnx import helper, numpy_helper

    folded = 0
    while True:
        inits = {i.name: i for i in graph.initializer}
        users: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                users.setdefault(name, []).append(node)
        outputs = {o.name for o in graph.output}

        def feeds_weights(name: str) -> bool:
            return name not in outputs and bool(users.get(name)) and all(u.op_type in _WEIGHT_OPS | {"Transpose", "Cast"}
                                                                         for u in users[name])

        changed = None
        for node in graph.node:
            out = node.output[0] if len(node.output) == 1 else None
            if out is None or not feeds_weights(out):
                continue
            attrs = {a.name: a for a in node.attribute}
            if node.op_type == "Constant" and "value" in attrs and attrs["value"].t.data_type in _FLOAT_TYPES:
                value = numpy_helper.to_array(attrs["value"].t)
            elif node.op_type in ("Transpose", "Cast") and len(node.input) == 1 and node.input[0] in inits \
                    and len(users.get(node.input[0], [])) == 1 and inits[node.input[0]].data_type in _FLOAT_TYPES:
                value = numpy_helper.to_array(inits[node.input[0]])
                if node.op_type == "Transpose":
                    perm = list(attrs["perm"].ints) if "perm" in attrs else None
                    value = np.transpose(value, perm)
                elif attrs["to"].i in _FLOAT_TYPES:
                    value = value.astype(helper.tensor_dtype_to_np_dtype(attrs["to"].i))
                else:
                    continue
            else:
                continue
            changed = (node, numpy_helper.from_array(np.ascontiguousarray(value), out))
            break
        if changed is None:
            return folded
        node, init = changed
        graph.node.remove(node)
        source = node.input[0] if node.input else None
        graph.initializer.append(init)
        if source in inits and not any(source in n.input for n in graph.node):
            graph.initializer.remove(inits[source])
        folded += 1


def load(path: Path, options, seed: int = 0) -> OnnxModel:
    """`options`: LoaderOptions or the equivalent dict (checked again here: rows may predate the allow-list)."""
    from compression.formats.options import as_dict

    options = as_dict(options)
    model = parse(path)
    hoist_weights(model)
    targets = find_targets(model)
    if not targets:
        raise ModelFormatError("the ONNX graph has no float MatMul/Gemm/Conv/LSTM/GRU/RNN weight initializers to "
                               "compress")
    initial = float_initializers(model)
    for t in targets:   # other constants may hold -inf on purpose (attention masks, padding values)
        if not bool(torch.isfinite(initial[t.name]).all()):
            raise ModelFormatError(f"weights contain NaN or Inf values (initializer {t.name!r}); refused")
    values = {t.name: _held(initial[t.name], t).contiguous().clone() for t in targets}
    feeds = sample_inputs(model, options, seed)
    return OnnxModel(model, targets, _holder(targets, values), initial, feeds)


def check_stages(stages) -> list[str]:
    problems = []
    for i, stage in enumerate(stages):
        if stage.kind not in ONNX_STAGES:
            problems.append(f"stage {i} ({stage.kind}): not supported for ONNX models (supported: "
                            f"{', '.join(sorted(ONNX_STAGES))}; they change initializer values in place)")
        elif stage.kind == "int8" and stage.needs_data:
            problems.append(f"stage {i} (int8): mode \"static\" calibrates activations with the job's datasets, "
                            "which ONNX uploads do not take; use mode \"dynamic\" (activation ranges at run time)")
        elif stage.needs_data:
            problems.append(f"stage {i} ({stage.kind}): needs a forward pass in torch; not supported for "
                            "ONNX models")
    return problems
