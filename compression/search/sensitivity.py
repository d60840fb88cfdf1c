"""Per-layer sensitivity and the allocation it makes possible.

Sensitivity: each weight layer alone stored at each integer width (groups of 64, asymmetric), the
rest of the model untouched, and the change of the constraint's metric measured on the selection
data. Allocation: start every layer at 8 bits, then narrow the layer whose next step saves the most
bytes per unit of measured loss, until the estimated container fits the target (losses treated as
additive, which the measured end-to-end candidate then checks).
"""
from __future__ import annotations

import time

import torch

from compression.data.evaluation import compare, outputs
from compression.methods.quantization import QuantizeSpec, quantized_weight
from compression.stage import weight_targets

WIDTHS = ("int8", "int4", "int3")
GROUP = 64
_SPEC = QuantizeSpec(kind="quantize", dtype="int8", group_size=GROUP, symmetric=False)


def _loss(metric: str, baseline: dict, after: dict) -> float:
    if metric == "mse":
        return float(after["mse"] - baseline["mse"])
    return float(baseline[metric] - after[metric])


def layer_sensitivity(model: torch.nn.Module, probe, data, metric: str, *, deadline: float | None = None) -> dict:
    """-> {"metric", "group_size", "layers": [{"tensor", "type", "parameters", "bytes": {w: n},
    "loss": {w: measured metric loss}}], "complete"}. The model is restored after each measurement."""
    with torch.no_grad():
        reference = outputs(model, data, probe)
        baseline = compare(reference, reference, data.labels, classifier=probe is None)
        rows, complete = [], True
        for target in weight_targets(model):
            if deadline is not None and time.monotonic() > deadline:
                complete = False
                break
            original = target.param.detach().clone()
            row = {"tensor": target.name, "type": target.module_type, "parameters": original.numel(),
                   "bytes": {}, "loss": {}}
            for width in WIDTHS:
                decoded, nbytes = quantized_weight(original, _SPEC, width)
                target.param.data.copy_(decoded)
                after = compare(outputs(model, data, probe), reference, data.labels, classifier=probe is None)
                row["bytes"][width], row["loss"][width] = nbytes, round(_loss(metric, baseline, after), 6)
            target.param.data.copy_(original)
            rows.append(row)
    return {"metric": metric, "group_size": GROUP, "layers": rows, "complete": complete}


def allocate(sensitivity: dict, budget_bytes: float, other_bytes: float) -> dict[str, str]:
    """Width per tensor: greedy on bytes saved per unit of measured loss until the weights plus
    `other_bytes` fit `budget_bytes` (or nothing narrower is left)."""
    layers = sensitivity["layers"]
    choice = {row["tensor"]: WIDTHS[0] for row in layers}
    total = other_bytes + sum(row["bytes"][WIDTHS[0]] for row in layers)
    while total > budget_bytes:
        best = None
        for row in layers:
            step = WIDTHS.index(choice[row["tensor"]])
            if step + 1 >= len(WIDTHS):
                continue
            cur, nxt = WIDTHS[step], WIDTHS[step + 1]
            saved = row["bytes"][cur] - row["bytes"][nxt]
            cost = max(row["loss"][nxt] - row["loss"][cur], 0.0) + 1e-9
            if saved > 0 and (best is None or saved / cost > best[0]):
                best = (saved / cost, row["tensor"], nxt, saved)
        if best is None:
            break
        _, tensor, width, saved = best
        choice[tensor] = width
        total -= saved
    return choice


def allocated_stages(choice: dict[str, str]) -> list[dict]:
    """The quantize stage (per-tensor widths, groups of 64) + Huffman that realises an allocation."""
    default = max(set(choice.values()), key=list(choice.values()).count) if choice else "int8"
    layers = {tensor: width for tensor, width in choice.items() if width != default}
    return [{"kind": "quantize", "dtype": default, "group_size": GROUP, "symmetric": False,
             **({"layers": layers} if layers else {})}, {"kind": "huffman"}]
