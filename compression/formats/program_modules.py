"""torch.export programs as ordinary modules, so methods that work on layers work on them too.

`ExportedProgram.module()` gives a GraphModule whose layers are gone: `aten.linear` / `aten.conv2d`
calls on attributes, under placeholder modules, and `eval()`/`train()` that raise. Methods select
layers by module type (the int8 stage, low rank, structured pruning), so each such call on a weight
of its own becomes a real `nn.Linear` / `nn.Conv2d` at the same path: the same Parameter objects,
the same state_dict keys, the same outputs. torch.export.unflatten rebuilds the hierarchy but not
the layer types, which is why this small graph rewrite is hand-written.
"""
from __future__ import annotations

import types

import torch
from torch import fx, nn

_aten = torch.ops.aten
_CONVS = {_aten.conv1d.default: (nn.Conv1d, 1), _aten.conv2d.default: (nn.Conv2d, 2)}


def as_plain_module(module: nn.Module) -> nn.Module:
    """Give an unlifted program module the usual train()/eval() (its graph is fixed at export time, so
    the mode only matters to our own code, e.g. training loops that call model.train())."""
    for name in ("train", "eval"):
        if name in vars(module):
            setattr(module, name, types.MethodType(getattr(nn.Module, name), module))
    if isinstance(module, fx.GraphModule):
        lift_layers(module)
    return module


def _param(gm: fx.GraphModule, node) -> tuple[str, str, nn.Parameter] | None:
    """(owner path, attribute, parameter) of a get_attr node used by exactly one call, else None."""
    if not isinstance(node, fx.Node) or node.op != "get_attr" or len(node.users) != 1:
        return None
    owner, _, attr = node.target.rpartition(".")
    try:
        value = gm.get_submodule(owner) if owner else None
    except AttributeError:
        return None
    param = getattr(value, attr, None) if value is not None else None
    return (owner, attr, param) if isinstance(param, nn.Parameter) else None


def _arg(node, index: int, name: str, default):
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def _layer(node, weight: nn.Parameter, bias: nn.Parameter | None) -> nn.Module | None:
    if node.target == _aten.linear.default and weight.ndim == 2:
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    elif node.target in _CONVS:
        cls, dims = _CONVS[node.target]
        stride, padding, dilation = (_arg(node, i, n, [d] * dims) for i, n, d in
                                     ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1)))
        groups = _arg(node, 6, "groups", 1)
        if not all(isinstance(v, (list, tuple)) and all(type(x) is int for x in v)
                   for v in (stride, padding, dilation)) or type(groups) is not int:
            return None
        layer = cls(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=tuple(stride),
                    padding=tuple(padding), dilation=tuple(dilation), groups=groups, bias=bias is not None,
                    device="meta")
    else:
        return None
    layer.weight = weight
    layer.bias = bias
    return layer


def lift_layers(gm: fx.GraphModule) -> int:
    """Turn linear/conv calls on their own weights into modules at the weight's path. -> how many."""
    lifted = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or (node.target != _aten.linear.default and node.target not in _CONVS):
            continue
        weight = _param(gm, _arg(node, 1, "weight", None))
        bias_node = _arg(node, 2, "bias", None)
        bias = _param(gm, bias_node) if bias_node is not None else None
        if weight is None or (bias_node is not None and (bias is None or bias[0] != weight[0])):
            continue
        owner_path = weight[0]
        owner = gm.get_submodule(owner_path) if owner_path else None
        own = {weight[1]} | ({bias[1]} if bias else set())
        if owner is None or list(owner.children()) or set(dict(owner.named_parameters(recurse=False))) != own \
                or list(owner.buffers(recurse=False)):
            continue   # a weight that shares its module with other state stays a plain call
        layer = _layer(node, weight[2], bias[2] if bias else None)
        if layer is None:
            continue
        parent_path, _, leaf = owner_path.rpartition(".")
        setattr(gm.get_submodule(parent_path) if parent_path else gm, leaf, layer)
        attr_nodes = (_arg(node, 1, "weight", None), bias_node)
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(owner_path, (_arg(node, 0, "input", None),))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
        for attr_node in attr_nodes:
            if isinstance(attr_node, fx.Node) and not attr_node.users:
                gm.graph.erase_node(attr_node)
        lifted += 1
    if lifted:
        gm.graph.lint()
        gm.recompile()
    return lifted
