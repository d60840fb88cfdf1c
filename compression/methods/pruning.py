"""Unstructured pruning: magnitude or Optimal-Brain-Damage saliency, per layer or global,
one-shot or gradual. Pruned weights become `sparse` nodes (relative gap indices + values);
the keep-masks live on in `CompressionState.masks` so later stages keep zeros zero."""
from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from compression.coding.encoding import Part, decode, dtype_name
from compression.errors import CompressionError
from compression.stage import (CompressionState, MethodSpec, Phase, WeightTarget, check_finite,
                                      pattern_matches, select_targets, sparse_node)

Pattern = Annotated[str, Field(min_length=1, max_length=256)]


class PruneSpec(MethodSpec):
    """Zero the least important weights of Linear/Conv/Embedding layers."""
    phase = Phase.STRUCTURE

    kind: Literal["prune"]
    sparsity: float = Field(gt=0.0, lt=1.0, description="fraction of weights set to zero, in (0, 1)")
    scope: Literal["per_layer", "global"] = Field(
        "per_layer", description="per_layer: every layer reaches `sparsity`; global: one threshold over all "
                                 "selected layers (layers named in `layers` keep their own sparsity)")
    criterion: Literal["magnitude", "saliency"] = Field(
        "magnitude", description="magnitude: |w|; saliency: Optimal-Brain-Damage w^2 x diagonal Fisher "
                                 "(grad^2 over calibration batches); saliency needs calibration data")
    steps: int = Field(1, ge=1, le=100, description="gradual schedule: sparsity rises as s(1-(1-t/steps)^3) "
                                                    "and the criterion is recomputed at each step")
    layers: dict[Pattern, Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        default_factory=dict, max_length=256,
        description="per-layer sparsity overrides: glob pattern of layer or tensor names -> sparsity")
    exclude: list[Pattern] = Field(default_factory=list, max_length=256,
                                   description="glob patterns of layers or tensors left dense")
    include_embeddings: bool = Field(True, description="also prune nn.Embedding weights")

    @property
    def needs_data(self) -> bool:
        return self.criterion == "saliency"


    def check_against(self, layer_names: list[str]) -> list[str]:
        problems = [f"exclude pattern {p!r} matches no layer of the model" for p in self.exclude
                    if not pattern_matches(p, layer_names)]
        return problems + [f"layers pattern {p!r} matches no layer of the model" for p in self.layers
                           if not pattern_matches(p, layer_names)]


def _split_batch(batch) -> tuple[tuple, torch.Tensor | None]:
    batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    if len(batch) >= 2 and isinstance(batch[-1], torch.Tensor) and not batch[-1].is_floating_point():
        return batch[:-1], batch[-1]
    return batch, None


def fisher_diagonal(model: torch.nn.Module, params: list[torch.nn.Parameter], batches) -> list[torch.Tensor]:
    """Empirical diagonal Fisher: sum over batches of (d cross-entropy / d w)^2. Labels come from the
    batch's last (integer) tensor, or else the model's own predictions."""
    acc = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    flags = [p.requires_grad for p in params]
    training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            for batch in batches:
                inputs, labels = _split_batch(batch)
                out = model(*inputs)
                if labels is None:
                    labels = out.detach().argmax(dim=1)
                grads = torch.autograd.grad(F.cross_entropy(out, labels), params, allow_unused=True)
                for a, g in zip(acc, grads):
                    if g is not None:
                        a += g.detach().float() ** 2
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(training)
    return acc


def _scores(spec: PruneSpec, state: CompressionState, targets: list[WeightTarget]) -> list[torch.Tensor]:
    ws = [t.param.detach().float() for t in targets]
    if spec.criterion == "magnitude":
        return [w.abs() for w in ws]
    fisher = fisher_diagonal(state.model, [t.param for t in targets], state.calibration)
    return [0.5 * f * w ** 2 for f, w in zip(fisher, ws)]


def _keep_lowest_out(scores: torch.Tensor, prunable: torch.Tensor, k: int) -> torch.Tensor:
    """Mask pruning the k lowest-scoring entries (already-pruned ones first; ties by position)."""
    s = torch.where(prunable, scores.reshape(-1), torch.full_like(scores.reshape(-1), -1.0))
    order = torch.sort(s, stable=True).indices
    keep = torch.ones_like(prunable)
    keep[order[:k]] = False
    return keep


def prune(spec: PruneSpec, state: CompressionState) -> None:
    if spec.needs_data and not state.calibration:
        raise CompressionError("the saliency criterion needs calibration data; none was given")
    targets = select_targets(state, spec.exclude, spec.include_embeddings, "prune")
    for p in spec.layers:
        if not pattern_matches(p, list(state.model.state_dict().keys())):
            raise CompressionError(f"layers pattern {p!r} matches no layer of the model")
    for t in targets:
        enc = state.encodings.get(t.name)
        if enc is not None and enc.codec != "sparse":
            raise CompressionError(f"{t.name} is already encoded by an earlier stage")
        check_finite(t.name, t.param.detach())

    def own_sparsity(t: WeightTarget) -> float | None:
        for p, s in spec.layers.items():
            if pattern_matches(p, [t.name]):
                return s
        return spec.sparsity if spec.scope == "per_layer" else None

    masks = {t.name: state.masks.get(t.name, torch.ones(t.param.shape, dtype=torch.bool)).reshape(-1)
             for t in targets}
    for step in range(1, spec.steps + 1):
        frac = 1.0 - (1.0 - step / spec.steps) ** 3
        scores = _scores(spec, state, targets)
        pooled = []
        for t, sc in zip(targets, scores):
            s = own_sparsity(t)
            if s is None:
                pooled.append((t, sc))
                continue
            masks[t.name] = masks[t.name] & _keep_lowest_out(sc, masks[t.name], round(s * frac * sc.numel()))
        if pooled:
            flat = torch.cat([sc.reshape(-1) for _, sc in pooled])
            prunable = torch.cat([masks[t.name] for t, _ in pooled])
            keep = prunable & _keep_lowest_out(flat, prunable, round(spec.sparsity * frac * flat.numel()))
            for (t, _), part in zip(pooled, torch.split(keep, [sc.numel() for _, sc in pooled])):
                masks[t.name] = part.clone()
        with torch.no_grad():
            for t in targets:
                t.param.copy_(torch.where(masks[t.name].reshape(t.param.shape), t.param, torch.zeros(())))
        state.checkpoint(step / (spec.steps + 1))

    for t in targets:
        mask = masks[t.name].reshape(t.param.shape)
        state.masks[t.name] = mask
        w = t.param.detach()
        enc = sparse_node(w, mask, lambda e, w=w: Part(e.to(w.dtype), dtype_name(w.dtype)), 8 * w.element_size())
        with torch.no_grad():
            t.param.copy_(decode(enc))   # the model holds exactly what the container will decode
        state.encodings[t.name] = enc
    state.checkpoint(1.0)
