"""Structured pruning (ARCHITECTURE phase): whole channels, filters, neurons and attention heads
are removed and every dependent layer is rewritten (residual adds, concatenations, batch norms,
attention projections, FFN pairs), giving a smaller dense model. Dependencies come from
Torch-Pruning's graph; the changed layers are recorded in `state.structure` so the original
architecture plus the edits rebuilds the result exactly. BERT-style encoders lose heads and FFN
neurons only (hidden width kept: see structured_bert)."""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from compression.errors import CompressionError, JobCancelled
from compression.stage import CompressionState, MethodSpec, Phase, check_finite, pattern_matches
from compression.methods.pruning import _split_batch
from compression.formats.structure import leaf_shapes, record_resized

Pattern = Annotated[str, Field(min_length=1, max_length=256)]
Ratio = Annotated[float, Field(ge=0.0, lt=1.0)]
MAX_GLOBAL_LAYER_RATIO = 0.9   # global ranking may not empty a layer


class StructuredPruneSpec(MethodSpec):
    """Remove whole channels/neurons (CNN, MLP) or attention heads and FFN neurons (BERT-like)."""
    phase = Phase.ARCHITECTURE

    kind: Literal["structured_prune"]
    ratio: Ratio = Field(0.5, description="fraction of each layer's output channels/neurons removed (BERT-like "
                                          "models: of each FFN's intermediate neurons)")
    heads_ratio: Ratio = Field(0.0, description="BERT-like models: fraction of each layer's attention heads removed")
    importance: Literal["l1", "l2", "bn_scale", "taylor"] = Field(
        "l1", description="channel score: L1/L2 norm of the coupled weights, batch-norm scale |gamma|, or "
                          "first-order Taylor |w x dL/dw| over calibration batches (needs calibration data)")
    scope: Literal["per_layer", "global"] = Field(
        "per_layer", description=f"per_layer: every layer loses `ratio`; global: one ranking over all layers "
                                 f"(no layer loses more than {MAX_GLOBAL_LAYER_RATIO:g})")
    layers: dict[Pattern, Ratio] = Field(default_factory=dict, max_length=256,
                                         description="per-layer ratio overrides: glob pattern of layer names -> ratio")
    exclude: list[Pattern] = Field(default_factory=list, max_length=256,
                                   description="glob patterns of layers never pruned (with every layer coupled "
                                               "to them, e.g. both sides of a residual add)")
    round_to: int | None = Field(None, ge=1, le=256, description="keep channel counts multiples of this (speed)")

    @property
    def needs_data(self) -> bool:
        return self.importance == "taylor"


    def check_against(self, layer_names: list[str]) -> list[str]:
        return [f"{what} pattern {p!r} matches no layer of the model"
                for what, pats in (("exclude", self.exclude), ("layers", self.layers))
                for p in pats if not pattern_matches(p, layer_names)]

    def check_module_types(self, types: dict[str, str]) -> list[str]:
        problems = []
        if self.heads_ratio and not any(n.rpartition(".")[2] == "query" for n in types):   # BERT-style q/k/v
            problems.append("heads_ratio needs attention heads; the model has no attention layers")
        if self.importance == "bn_scale" and not any(t.startswith("BatchNorm") for t in types.values()):
            problems.append("importance bn_scale needs batch norms; the model has none")
        return problems


@dataclass
class StructuredResult:
    params_before: int
    params_after: int
    changed_layers: list[str]
    heads: dict[str, int]    # attention module -> heads kept (BERT-like models)


def _importance(name: str):
    import torch_pruning as tp
    if name == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.MagnitudeImportance(p=2)
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    return tp.importance.TaylorImportance()


def is_program(model: nn.Module) -> bool:
    """TorchScript and torch.export programs have no Python layers to rewrite."""
    return isinstance(model, (torch.jit.ScriptModule, torch.fx.GraphModule)) or \
        type(model).__module__.startswith("torch.export")


def _modules_matching(model: nn.Module, patterns) -> list[tuple[str, nn.Module]]:
    """Modules named by a pattern, directly or through one of their own tensors."""
    found = []
    for n, m in model.named_modules():
        own = [f"{n}.{t}" for t, _ in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]]
        if n and any(fnmatchcase(n, p) or pattern_matches(p, own) for p in patterns):
            found.append((n, m))
    return found


def output_layers(model: nn.Module, inputs: tuple, call) -> list[nn.Module]:
    """Leaf layers whose output is (a view of) the model's output: their output width is the
    model's (classifier logits), so they are never pruned. Hand-written: Torch-Pruning has no
    notion of protected outputs. Falls back to the last layer that ran."""
    outs, ran = {}, []

    def hook(mod, _inp, out):
        if isinstance(out, torch.Tensor):
            outs[id(mod)] = out   # held, so that no later tensor reuses its memory address
            ran.append(mod)

    leaves = [m for m in model.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            result = call(model, inputs)
    finally:
        for h in handles:
            h.remove()
    from torch.utils._pytree import tree_leaves
    ptrs = {t.untyped_storage().data_ptr() for t in tree_leaves(result) if isinstance(t, torch.Tensor)}
    found = [m for m in leaves if id(m) in outs and outs[id(m)].untyped_storage().data_ptr() in ptrs]
    return found or ran[-1:]


def _call(model: nn.Module, inputs: tuple, hf: bool):
    return model(input_ids=inputs[0], attention_mask=inputs[1]) if hf else model(*inputs)


def _main_output(out) -> torch.Tensor:
    hidden = getattr(out, "last_hidden_state", None)
    if hidden is not None:
        return hidden
    from torch.utils._pytree import tree_leaves
    return next(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))


def accumulate_taylor_gradients(model: nn.Module, batches: list[tuple], hf: bool) -> None:
    """Gradients for the Taylor criterion: cross-entropy against the batch labels (or the model's
    own predictions) for classifiers; without classes (encoders), the mean squared output, i.e.
    how much each channel contributes to the output energy."""
    model.zero_grad(set_to_none=True)
    for batch in batches:
        # HF batches are (input_ids, attention_mask[, ...]): the integer mask is no label
        inputs, labels = (tuple(batch[:2]), None) if hf else _split_batch(batch)
        out = _main_output(_call(model, inputs, hf))
        if out.ndim == 2 and not hf:
            loss = F.cross_entropy(out, labels if labels is not None else out.detach().argmax(1))
        else:
            loss = out.float().pow(2).mean()
        loss.backward()


def _check(spec: StructuredPruneSpec, state: CompressionState) -> None:
    if state.encodings:
        raise CompressionError("structured_prune must run before any stage that encodes weights "
                               "(prune, quantize, share)")
    if is_program(state.model):
        raise CompressionError("structured_prune rewrites layers, which TorchScript and torch.export programs do "
                               "not expose; upload weights with a built-in architecture or a Hugging Face folder")
    if spec.needs_data and not state.calibration:
        raise CompressionError("the taylor importance needs calibration data; none was given")
    if not state.example_inputs:
        raise CompressionError("structured_prune needs example inputs to trace the model")
    names = list(state.model.state_dict().keys())
    for what, pats in (("exclude", spec.exclude), ("layers", spec.layers)):
        for p in pats:
            if not pattern_matches(p, names):
                raise CompressionError(f"{what} pattern {p!r} matches no layer of the model")
    for name, t in state.model.state_dict().items():
        if t.is_floating_point():
            check_finite(name, t)


def structured_prune(spec: StructuredPruneSpec, state: CompressionState) -> StructuredResult:
    import torch_pruning as tp

    from compression.methods import structured_bert
    _check(spec, state)
    model, inputs = state.model, tuple(state.example_inputs)
    hf = structured_bert.is_hf(model)
    params_before = sum(p.numel() for p in model.parameters())
    before = leaf_shapes(model)
    with torch.no_grad():
        reference_shapes = [tuple(t.shape) for t in _flat(_call(model, inputs, hf))]
    state.checkpoint(0.05)

    ignored = [m for _, m in _modules_matching(model, spec.exclude)]
    kwargs: dict = {}
    if hf:
        attention = structured_bert.attention_modules(model)
        ignored += structured_bert.hidden_width_layers(model, attention)
        kwargs = structured_bert.head_options(attention, spec.heads_ratio)
        example, output_transform = {"input_ids": inputs[0], "attention_mask": inputs[1]}, _main_output
    else:
        if spec.heads_ratio:
            raise CompressionError("heads_ratio applies to BERT-like Hugging Face models only")
        if spec.importance == "bn_scale" and not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                     for m in model.modules()):
            raise CompressionError("the bn_scale importance needs batch-norm layers; the model has none")
        ignored += output_layers(model, inputs, lambda m, x: _call(m, x, False))
        example, output_transform = inputs, None
    ratios = {m: r for p, r in spec.layers.items() for _, m in _modules_matching(model, [p])}
    if hf:
        ratios.update(structured_bert.head_gates(attention, spec.heads_ratio))

    training = model.training
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.eval()
    try:
        for p in model.parameters():   # Torch-Pruning follows grad_fn links from the parameters
            p.requires_grad_(True)
        with torch.enable_grad():   # the graph is traced through autograd (jobs run stages under no_grad)
            pruner = tp.pruner.MetaPruner(
                model, example, importance=_importance(spec.importance), global_pruning=spec.scope == "global",
                pruning_ratio=spec.ratio, pruning_ratio_dict=ratios or None, ignored_layers=ignored,
                max_pruning_ratio=MAX_GLOBAL_LAYER_RATIO if spec.scope == "global" else 1.0,
                round_to=spec.round_to, output_transform=output_transform, **kwargs)
            state.checkpoint(0.3)
            if spec.importance == "taylor":
                accumulate_taylor_gradients(model, state.calibration, hf)
            state.checkpoint(0.6)
            pruner.step()
            model.zero_grad(set_to_none=True)
    except (CompressionError, JobCancelled):
        raise
    except Exception as exc:   # a graph Torch-Pruning cannot follow: a user-facing failure
        raise CompressionError(f"structured pruning failed: {type(exc).__name__}: {exc}"[:500]) from None
    finally:
        model.train(training)
        for n, p in model.named_parameters():   # pruned layers hold new Parameter objects
            p.requires_grad_(flags.get(n, True))
    state.checkpoint(0.9)

    heads = structured_bert.record_heads(model, pruner, state.structure) if hf else {}
    changed = record_resized(state.structure, model, before)
    with torch.no_grad():
        shapes = [tuple(t.shape) for t in _flat(_call(model, inputs, hf))]
    if shapes != reference_shapes:
        raise CompressionError(f"structured pruning changed the model's output shape {reference_shapes} -> {shapes}")
    state.checkpoint(1.0)
    return StructuredResult(params_before, sum(p.numel() for p in model.parameters()), changed, heads)


def _flat(out) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_leaves
    return [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
