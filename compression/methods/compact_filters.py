"""Compact and transferred convolutional filters (ARCHITECTURE phase; the survey's "transferred/compact
filters" family).

separable: a k x k convolution becomes `multiplier` depthwise k x k convolutions, each followed by its own
pointwise 1x1, summed (compression.layers.separable; MobileNet's form at multiplier 1), fitted per input channel
by a rank-`multiplier` SVD of the filters that read that channel: W[o, i] ~ sum_r P_r[o, i] D_r[i], the
least-squares best such split.
transferred: the layer's filters become transforms (negation, flips, rotations) of a bank of fewer base
filters, fitted by transform-invariant k-means (compression.layers.transferred): unique filter parameters
shrink by the number of transforms.
Both need recovery training (finetune / distill later in the pipeline). Every swap is recorded in
`state.structure`, so artifacts rebuild without pickles."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from compression.errors import CompressionError
from compression.formats.structure import record_replacement
from compression.layers.separable import SeparableConv2d
from compression.layers.transferred import TransferredConv2d, fit_transferred
from compression.stage import CompressionState, MethodSpec, Phase, check_finite, modules_to_replace, \
    pattern_matches, require_replaceable_layers

Pattern = Annotated[str, Field(min_length=1, max_length=256)]
Transform = Literal["negate", "hflip", "vflip", "rot90", "rot180", "rot270"]


class CompactFiltersSpec(MethodSpec):
    """Replace k x k convolutions by depthwise + pointwise pairs, or by transforms of fewer base filters."""
    phase = Phase.ARCHITECTURE
    swaps_layers = True

    kind: Literal["compact_filters"]
    form: Literal["separable", "transferred"] = Field(
        "separable", description="separable: depthwise kxk + pointwise 1x1 (fewer MACs, faster); transferred: "
        "filters are negations/flips/rotations of a smaller base bank (fewer unique parameters, same MACs)")
    multiplier: int = Field(1, ge=1, le=16, description="separable: depthwise filters per input channel (the rank of "
                                                        "the per-channel fit)")
    transforms: list[Transform] = Field(["negate"], min_length=1, max_length=6, description="transferred: the "
                                        "transforms besides identity; unique filters shrink by 1 + their number")
    layers: list[Pattern] = Field(default_factory=list, max_length=256, description="glob patterns of the convs to "
                                  "replace; empty: every ungrouped conv with a kernel larger than 1x1")
    exclude: list[Pattern] = Field(default_factory=list, max_length=256, description="glob patterns of convs kept")
    min_saving: float = Field(0.3, ge=0.0, lt=1.0, description="separable: replace a conv only when its MACs drop "
                              "by at least this fraction (a conv reading few channels gains nothing)")
    iterations: int = Field(20, ge=1, le=200, description="transferred: k-means iterations of the fit")

    @field_validator("transforms")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each transform at most once")
        return value

    def check_against(self, layer_names: list[str]) -> list[str]:
        return [f"{what} pattern {p!r} matches no layer of the model"
                for what, pats in (("layers", self.layers), ("exclude", self.exclude))
                for p in pats if not pattern_matches(p, layer_names)]

    def check_module_types(self, types: dict[str, str]) -> list[str]:
        if "Conv2d" not in set(types.values()):
            return ["compact_filters finds no Conv2d layer in the model"]
        return []


@dataclass
class FilterDecision:
    name: str
    form: str
    params_before: int    # filter weights (bias excluded: kept)
    params_after: int     # separable: both convs; transferred: the base bank
    macs_ratio: float     # MACs before / after per output position (1.0 for transferred)
    replaced: bool
    relative_error: float  # ||W - fitted W|| / ||W|| before recovery training


def _eligible(mod: nn.Module) -> bool:
    return type(mod) is nn.Conv2d and mod.groups == 1 and mod.padding_mode == "zeros" \
        and tuple(mod.kernel_size) != (1, 1)


def separable(conv: nn.Conv2d, multiplier: int) -> tuple[SeparableConv2d, torch.Tensor]:
    """(the separable layer, the dense filters it computes). Per input channel i, the filters reading it,
    M_i [out, kh*kw], are split by SVD: depthwise filter r of i = sqrt(s_r) v_r, pointwise column = sqrt(s_r) u_r."""
    w = conv.weight.detach()
    o, i, kh, kw = w.shape
    r = min(multiplier, o, kh * kw)
    u, s, vh = torch.linalg.svd(w.double().permute(1, 0, 2, 3).reshape(i, o, kh * kw), full_matrices=False)
    root = s[:, :r].sqrt()                                                     # [i, r]
    depth = root[:, :, None] * vh[:, :r]                                      # [i, r, kh*kw]
    point = u[:, :, :r] * root[:, None, :]                                    # [i, o, r]
    new = SeparableConv2d(i, o, (kh, kw), r, conv.stride, conv.padding, conv.dilation, conv.bias is not None)
    new = new.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        for k in range(r):
            new.depthwise[k].weight.copy_(depth[:, k].reshape(i, 1, kh, kw))
            new.pointwise[k].weight.copy_(point[:, :, k].t().reshape(o, i, 1, 1))
        if conv.bias is not None:
            new.pointwise[0].bias.copy_(conv.bias.detach())
    return new, new.dense_weight().detach()


def transferred(conv: nn.Conv2d, transforms: list[str], iterations: int, seed: int
                ) -> tuple[TransferredConv2d, torch.Tensor]:
    w = conv.weight.detach()
    names = ["identity", *transforms]
    bases = math.ceil(w.shape[0] / len(names))
    bank, which_base, which_t = fit_transferred(w, bases, names, iterations, seed)
    new = TransferredConv2d(conv.in_channels, conv.out_channels, tuple(conv.kernel_size), bases, names,
                            tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.bias is not None)
    new = new.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(bank)
        new.which_base.copy_(which_base)
        new.which_transform.copy_(which_t)
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach())
        return new, new.filters()


def compact_filters(spec: CompactFiltersSpec, state: CompressionState) -> list[FilterDecision]:
    model = state.model
    require_replaceable_layers(state, "compact_filters")
    chosen = modules_to_replace(model, spec.layers, spec.exclude, _eligible)
    if not chosen:
        raise CompressionError("compact_filters selects no ungrouped Conv2d with a kernel larger than 1x1")
    decisions = []
    for j, (name, conv) in enumerate(chosen):
        check_finite(f"{name}.weight", conv.weight)
        w = conv.weight.detach()
        o, i, kh, kw = w.shape
        if spec.form == "separable":
            r = min(spec.multiplier, o, kh * kw)
            macs_ratio = (o * i * kh * kw) / (i * r * kh * kw + i * r * o)
            ok = 1 / macs_ratio <= 1 - spec.min_saving
            new, fitted = separable(conv, spec.multiplier)
            after = i * r * (kh * kw + o)
        elif {"rot90", "rot270"} & set(spec.transforms) and kh != kw:   # rotations need square kernels
            decisions.append(FilterDecision(name, "transferred", w.numel(), w.numel(), 1.0, False, 0.0))
            continue
        else:
            new, fitted = transferred(conv, spec.transforms, spec.iterations, state.seed)
            macs_ratio, after, ok = 1.0, new.weight.numel(), new.weight.shape[0] < o
        error = float((fitted - w).norm() / w.norm().clamp(min=1e-12))
        if ok:
            new.train(conv.training)
            record_replacement(state.structure, model, name, new)
        decisions.append(FilterDecision(name, spec.form, w.numel(), after if ok else w.numel(),
                                        round(macs_ratio, 3) if ok else 1.0, ok, round(error, 4)))
        state.checkpoint((j + 1) / len(chosen))
    if not any(d.replaced for d in decisions):
        raise CompressionError("compact_filters replaced no layer (each conv reads too few channels to gain; lower "
                               "min_saving or choose other layers)")
    return decisions

