"""Structured matrices (ARCHITECTURE phase; the survey's "structured matrix" family): chosen Linear
layers and 1x1 convolutions become block-circulant, circulant or Toeplitz layers initialised by the
least-squares projection of the trained weight (compression.layers.structured_matrices). The prior is
strong: accuracy comes back only with recovery training (finetune / distill later in the pipeline).
Each swap is recorded in `state.structure`, so artifacts rebuild without pickles."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from compression.errors import CompressionError
from compression.formats.structure import record_replacement
from compression.layers.structured_matrices import BlockCirculantLinear, ToeplitzLinear, project_block_circulant, \
    project_toeplitz
from compression.stage import CompressionState, MethodSpec, Phase, check_finite, modules_to_replace, \
    pattern_matches, require_replaceable_layers

Pattern = Annotated[str, Field(min_length=1, max_length=256)]


class StructuredMatrixSpec(MethodSpec):
    """Replace Linear layers (and 1x1 convs) by circulant-structured or Toeplitz layers (few parameters)."""
    phase = Phase.ARCHITECTURE
    swaps_layers = True

    kind: Literal["structured_matrix"]
    structure: Literal["block_circulant", "circulant", "toeplitz"] = Field(
        "block_circulant", description="block_circulant: a grid of b x b circulant blocks (b numbers each); "
        "circulant: one circulant block padded to the larger side; toeplitz: constant diagonals (m + n - 1 numbers)")
    block_size: int = Field(16, ge=2, le=4096, description="block_circulant: the block side b (about b times "
                                                           "fewer parameters)")
    layers: list[Pattern] = Field(default_factory=list, max_length=256, description="glob patterns of the layers "
                                  "to replace; empty: every Linear and 1x1 convolution")
    exclude: list[Pattern] = Field(default_factory=list, max_length=256, description="glob patterns of layers kept")
    min_saving: float = Field(0.5, ge=0.0, lt=1.0, description="replace a layer only when its weight parameters "
                              "drop by at least this fraction")

    def check_against(self, layer_names: list[str]) -> list[str]:
        return [f"{what} pattern {p!r} matches no layer of the model"
                for what, pats in (("layers", self.layers), ("exclude", self.exclude))
                for p in pats if not pattern_matches(p, layer_names)]

    def check_module_types(self, types: dict[str, str]) -> list[str]:
        if not {"Linear", "Conv2d"} & set(types.values()):
            return ["structured_matrix finds no Linear layer or 1x1 convolution in the model"]
        return []


@dataclass
class MatrixDecision:
    name: str
    structure: str
    params_before: int    # weight numbers of the layer (bias excluded: kept as is)
    params_after: int
    replaced: bool
    relative_error: float  # ||W - projection|| / ||W|| before recovery training


def _eligible(mod: nn.Module) -> bool:
    if type(mod) is nn.Linear:
        return True
    return type(mod) is nn.Conv2d and tuple(mod.kernel_size) == (1, 1) and tuple(mod.stride) == (1, 1) \
        and mod.groups == 1 and tuple(mod.padding) == (0, 0) and mod.padding_mode == "zeros"


def _structured(spec: StructuredMatrixSpec, mod: nn.Module) -> nn.Module:
    conv = isinstance(mod, nn.Conv2d)
    w = mod.weight.detach().reshape(mod.weight.shape[0], -1)
    m, n = w.shape
    bias = mod.bias is not None
    if spec.structure == "toeplitz":
        new = ToeplitzLinear(n, m, bias=bias, conv1x1=conv)
        vector = project_toeplitz(w)
    else:
        b = max(m, n) if spec.structure == "circulant" else spec.block_size
        new = BlockCirculantLinear(n, m, b, bias=bias, conv1x1=conv)
        vector = project_block_circulant(w, b)
    new = new.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(vector)
        if bias:
            new.bias.copy_(mod.bias.detach())
    return new


def structured_matrix(spec: StructuredMatrixSpec, state: CompressionState) -> list[MatrixDecision]:
    model = state.model
    require_replaceable_layers(state, "structured_matrix")
    chosen = modules_to_replace(model, spec.layers, spec.exclude, _eligible)
    if not chosen:
        raise CompressionError("structured_matrix selects no Linear layer or 1x1 stride-1 convolution")
    shared = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        shared[id(p)] = shared.get(id(p), 0) + 1
    decisions = []
    for j, (name, mod) in enumerate(chosen):
        check_finite(f"{name}.weight", mod.weight)
        w = mod.weight.detach().reshape(mod.weight.shape[0], -1)
        new = _structured(spec, mod)
        after = new.weight.numel()
        ok = after <= (1 - spec.min_saving) * w.numel() and shared[id(mod.weight)] == 1   # tied weights stay tied
        error = float((new.dense_weight().detach() - w).norm() / w.norm().clamp(min=1e-12))
        if ok:
            new.train(mod.training)
            record_replacement(state.structure, model, name, new)
        decisions.append(MatrixDecision(name, spec.structure if spec.structure != "block_circulant"
                                        else f"block_circulant-{spec.block_size}", w.numel(),
                                        after if ok else w.numel(), ok, round(error, 4)))
        state.checkpoint((j + 1) / len(chosen))
    if not any(d.replaced for d in decisions):
        raise CompressionError(f"structured_matrix replaced no layer: none would lose {spec.min_saving:.0%} of its "
                               "parameters (lower min_saving or raise block_size)")
    return decisions

