"""Sensitivity-based bit allocation across layers (mixed precision under a size budget).

Each layer's sensitivity is measured, not guessed: on a few calibration batches, the layer alone is
rounded to each candidate width and the mean squared change of the model's outputs recorded. Then a
greedy pass starts every layer at the narrowest width and repeatedly widens the layer with the
largest error drop per added bit until the budget (average code bits per weight) is spent. The
greedy rule is optimal when the errors add up and each layer's curve is convex, which is about
what quantization noise does. Hand-written: no maintained library allocates bits for arbitrary
torch modules (HAWQ needs Hessian traces; here a forward pass per layer and width is enough)."""
from __future__ import annotations

import torch
from torch.utils._pytree import tree_leaves

from compression.coding.encoding import decode


@torch.no_grad()
def _outputs(model: torch.nn.Module, batches, forward) -> list[torch.Tensor]:
    outs = []
    for batch in batches:
        leaves = [t for t in tree_leaves(forward(model, batch)) if isinstance(t, torch.Tensor) and t.is_floating_point()]
        outs.append(torch.cat([t.reshape(-1).double() for t in leaves]))
    return outs


def sensitivities(model: torch.nn.Module, layers: dict[str, torch.nn.Linear], batches, candidates: tuple[int, ...],
                  quantize, forward, progress=lambda f: None) -> dict[str, dict[int, float]]:
    """name -> {bits: mean squared output change when only this layer is quantized to `bits`}."""
    reference = _outputs(model, batches, forward)
    result: dict[str, dict[int, float]] = {}
    for i, (name, layer) in enumerate(layers.items()):
        original = layer.weight.detach().clone()
        result[name] = {}
        try:
            for bits in candidates:
                with torch.no_grad():
                    layer.weight.copy_(decode(quantize(original, bits)))
                outs = _outputs(model, batches, forward)
                result[name][bits] = float(sum(((o - r) ** 2).mean() for o, r in zip(outs, reference)) / len(outs))
        finally:
            with torch.no_grad():
                layer.weight.copy_(original)
        progress((i + 1) / len(layers))
    return result


def allocate(errors: dict[str, dict[int, float]], sizes: dict[str, int], bits_per_weight: float) -> dict[str, int]:
    """Greedy widening under sum(size × bits) <= bits_per_weight × sum(size). A step may skip widths
    (3 -> 5) so that a curve that is flat then steep still gets its big gain."""
    chosen = {n: min(e) for n, e in errors.items()}
    budget = bits_per_weight * sum(sizes[n] for n in errors)
    spent = sum(sizes[n] * b for n, b in chosen.items())
    while True:
        best, best_gain = None, 0.0
        for n, e in errors.items():
            for wider in (b for b in e if b > chosen[n]):
                extra = sizes[n] * (wider - chosen[n])
                gain = (e[chosen[n]] - e[wider]) / extra
                if spent + extra <= budget and gain > best_gain:
                    best, best_gain = (n, wider), gain
        if best is None:
            return chosen
        spent += sizes[best[0]] * (best[1] - chosen[best[0]])
        chosen[best[0]] = best[1]
