"""Architecture edits as data: what structured pruning, low-rank factorization and student
derivation changed, recorded so that the original architecture (built-in or Hugging Face
config) plus this list rebuilds the compressed model exactly — with no pickles and no code
in the container.

An edit is one of
  {"op": "replace", "module": "fc1", "with": <module description>}
  {"op": "set_attrs", "module": "encoder.layer.0.attention.self", "attrs": {"num_attention_heads": 6, ...}}
  {"op": "keep_children", "module": "encoder.layer", "indices": [0, 2, 4]}   # a ModuleList keeps these

A module description is {"type": <allow-listed layer>, "args": {...}} or, for a Sequential,
{"type": "Sequential", "children": [...]}. Parameters are not described: they come from
the state dict afterwards. Hand-written because torch has no safe, data-only module
serialisation (torch.save of a module pickles it).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from compression.errors import CompressionError
from compression.layers.separable import SeparableConv2d
from compression.layers.structured_matrices import BlockCirculantLinear, ToeplitzLinear
from compression.layers.transferred import TransferredConv2d

MAX_EDITS = 10_000

# type -> (constructor, init arguments read back from an instance)
_LAYERS: dict[str, tuple[Callable[..., nn.Module], tuple[str, ...]]] = {
    "Linear": (nn.Linear, ("in_features", "out_features", "bias")),
    "Conv1d": (nn.Conv1d, ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                           "bias")),
    "Conv2d": (nn.Conv2d, ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                           "bias")),
    "BatchNorm1d": (nn.BatchNorm1d, ("num_features", "eps", "momentum", "affine", "track_running_stats")),
    "BatchNorm2d": (nn.BatchNorm2d, ("num_features", "eps", "momentum", "affine", "track_running_stats")),
    "LayerNorm": (nn.LayerNorm, ("normalized_shape", "eps", "elementwise_affine", "bias")),
    "Embedding": (nn.Embedding, ("num_embeddings", "embedding_dim", "padding_idx")),
    "Identity": (nn.Identity, ()),
    "BlockCirculantLinear": (BlockCirculantLinear, ("in_features", "out_features", "block_size", "bias", "conv1x1")),
    "ToeplitzLinear": (ToeplitzLinear, ("in_features", "out_features", "bias", "conv1x1")),
    "SeparableConv2d": (SeparableConv2d, ("in_channels", "out_channels", "kernel_size", "rank", "stride", "padding",
                                          "dilation", "bias")),
    "TransferredConv2d": (TransferredConv2d, ("in_channels", "out_channels", "kernel_size", "bases", "transforms",
                                              "stride", "padding", "dilation", "bias")),
}
# attributes set_attrs may change: plain sizes that forward() reads (BERT attention after head pruning)
SETTABLE_ATTRS = frozenset({"num_attention_heads", "attention_head_size", "all_head_size", "num_heads",
                            "head_dim", "num_key_value_heads", "hidden_size", "intermediate_size"})


def _arg(mod: nn.Module, name: str):
    value = getattr(mod, name)
    if name == "bias":   # the constructor takes a flag; the instance holds the tensor or None
        return value is not None
    return list(value) if isinstance(value, tuple) else value


def describe_module(mod: nn.Module) -> dict:
    """Data-only description of an allow-listed layer or a Sequential of them."""
    if type(mod) is nn.Sequential:
        return {"type": "Sequential", "children": [describe_module(m) for m in mod]}
    kind = type(mod).__name__
    if kind not in _LAYERS or type(mod) is not _LAYERS[kind][0]:
        raise CompressionError(f"cannot record a {kind} module in a container (allowed: Sequential, "
                               f"{', '.join(_LAYERS)})")
    args = {}
    for name in _LAYERS[kind][1]:
        args[name] = _arg(mod, name)
    return {"type": kind, "args": args}


def build_module(desc: dict, depth: int = 0) -> nn.Module:
    if not isinstance(desc, dict) or depth > 4:
        raise CompressionError("malformed module description")
    kind = desc.get("type")
    if kind == "Sequential":
        children = desc.get("children")
        if not isinstance(children, list) or len(children) > 64:
            raise CompressionError("malformed Sequential description")
        return nn.Sequential(*(build_module(c, depth + 1) for c in children))
    if kind not in _LAYERS:
        raise CompressionError(f"unknown layer type {kind!r} in the structure record")
    ctor, allowed = _LAYERS[kind]
    args = desc.get("args", {})
    if not isinstance(args, dict) or set(args) - set(allowed):
        raise CompressionError(f"unexpected arguments for {kind}: {sorted(set(args) - set(allowed))}")
    for v in args.values():
        if not isinstance(v, (int, float, bool, str, list, type(None))) or isinstance(v, list) and not (
                len(v) <= 16 and (all(isinstance(x, int) for x in v) or all(isinstance(x, str) for x in v))):
            raise CompressionError(f"bad argument value in the {kind} description")
    try:
        return ctor(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
    except (TypeError, ValueError, RuntimeError) as exc:   # the layers check their own arguments
        raise CompressionError(f"cannot build {kind}: {exc}") from None


def _parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent_name, _, leaf = path.rpartition(".")
    try:
        return (model.get_submodule(parent_name) if parent_name else model), leaf
    except AttributeError:
        raise CompressionError(f"structure record names a module the model lacks: {path!r}") from None


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, leaf = _parent(model, path)
    old = getattr(parent, leaf, None)
    if not isinstance(old, nn.Module):
        raise CompressionError(f"structure record names a module the model lacks: {path!r}")
    new.train(old.training)   # a fresh BatchNorm is in training mode: keep the model's eval mode
    setattr(parent, leaf, new)


def apply_edit(model: nn.Module, edit: dict) -> None:
    op, path = edit.get("op"), edit.get("module")
    if not isinstance(path, str):
        raise CompressionError("structure edit without a module path")
    if op == "replace":
        replace_module(model, path, build_module(edit.get("with")))
    elif op == "set_attrs":
        target = model.get_submodule(path) if path else model
        for name, value in (edit.get("attrs") or {}).items():
            if name not in SETTABLE_ATTRS or not isinstance(value, int) or isinstance(value, bool):
                raise CompressionError(f"structure record may not set {name!r}")
            setattr(target, name, value)
    elif op == "keep_children":
        holder = model.get_submodule(path)
        if not isinstance(holder, (nn.ModuleList, nn.Sequential)):
            raise CompressionError(f"{path!r} is not a list of modules")
        indices = edit.get("indices")
        if not isinstance(indices, list) or not all(isinstance(i, int) and 0 <= i < len(holder) for i in indices):
            raise CompressionError(f"bad indices for {path!r}")
        kept = type(holder)([holder[i] for i in indices])
        replace_module(model, path, kept)
    else:
        raise CompressionError(f"unknown structure edit {op!r}")


def apply_structure(model: nn.Module, edits: list[dict]) -> nn.Module:
    """Replays recorded edits on a freshly built original architecture (before loading weights)."""
    if not isinstance(edits, list) or len(edits) > MAX_EDITS:
        raise CompressionError("malformed structure record")
    for edit in edits:
        if not isinstance(edit, dict):
            raise CompressionError("malformed structure edit")
        apply_edit(model, edit)
    return model


def record_replacement(edits: list[dict], model: nn.Module, path: str, new: nn.Module) -> None:
    """Swaps `path` for `new` in `model` and appends the edit that replays it."""
    replace_module(model, path, new)
    edits.append({"op": "replace", "module": path, "with": describe_module(new)})


def record_resized(edits: list[dict], model: nn.Module, before: dict[str, tuple[torch.Size, ...]]) -> list[str]:
    """After an in-place structural change (e.g. Torch-Pruning), records a `replace` for every
    leaf module whose parameter/buffer shapes differ from `before` (from `leaf_shapes`)."""
    changed = []
    for name, shapes in leaf_shapes(model).items():
        if before.get(name) != shapes:
            edits.append({"op": "replace", "module": name, "with": describe_module(model.get_submodule(name))})
            changed.append(name)
    return changed


def leaf_shapes(model: nn.Module) -> dict[str, tuple]:
    """module name -> shapes of its own parameters and buffers (modules that hold tensors)."""
    out = {}
    for name, mod in model.named_modules():
        tensors = [*mod.named_parameters(recurse=False), *mod.named_buffers(recurse=False)]
        if tensors and name:
            out[name] = tuple((n, tuple(t.shape)) for n, t in tensors)
    return out
