"""Low-rank factorization (ARCHITECTURE phase): a Linear layer W ~ U.V becomes two thinner
Linears; a kxk Conv2d becomes 1x1 -> kxk -> 1x1 convs by Tucker-2 (modes out/in) or by CP
(W[o,i,hw] = sum_r A B C: 1x1 -> depthwise kxk -> 1x1); a 1x1 conv is factored by SVD into
two 1x1 convs. Ranks come from singular-value energy, a parameter ratio, or one global
energy threshold (see lowrank_rank). Layers that would not get smaller (params or MACs),
grouped/depthwise convs and embeddings are left alone. Every swap is recorded in
`state.structure`, so the original architecture plus the edits rebuilds the model."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from compression.errors import CompressionError
from compression.stage import CompressionState, MethodSpec, Phase, check_finite, pattern_matches, \
    require_replaceable_layers, select_targets
from compression.methods.lowrank_rank import Layer, choose_ranks, kept_energy, spectra_of, stride_product
from compression.formats.structure import record_replacement

Pattern = Annotated[str, Field(min_length=1, max_length=256)]


class LowRankSpec(MethodSpec):
    """Replace Linear/Conv2d layers by products of thinner layers (SVD, Tucker-2, CP)."""
    phase = Phase.ARCHITECTURE
    swaps_layers = True

    kind: Literal["low_rank"]
    energy: float | None = Field(None, gt=0.0, le=1.0, description="keep the smallest ranks whose singular-value "
                                 "energy (sum of squares) reaches this fraction; default 0.9 when no criterion is set")
    ratio: float | None = Field(None, gt=0.0, lt=1.0, description="keep at most this fraction of each layer's "
                                "weights (global scope: of all selected layers' weights together)")
    rank: int | None = Field(None, ge=1, le=65536, description="one fixed rank for every layer (clipped to its size)")
    scope: Literal["per_layer", "global"] = Field(
        "per_layer", description="per_layer: each layer meets the criterion; global: one threshold on normalised "
                                 "singular-value energies across all layers (large flat-spectrum layers are cut "
                                 "hardest); energy then means the mean kept energy over layers")
    conv_method: Literal["tucker", "cp"] = Field("tucker", description="decomposition of kxk convs")
    methods: dict[Pattern, Literal["tucker", "cp"]] = Field(
        default_factory=dict, max_length=256, description="per-conv override: glob pattern of layer names -> method")
    layer_types: list[Literal["linear", "conv"]] = Field(["linear", "conv"], min_length=1,
                                                         description="which layer types to factor")
    exclude: list[Pattern] = Field(default_factory=list, max_length=256,
                                   description="glob patterns of layers left unfactored")
    min_saving: float = Field(0.0, ge=0.0, lt=1.0, description="factor a layer only when its parameters and MACs "
                              "drop by at least this fraction (near break-even ranks cost accuracy for little)")
    iterations: int = Field(50, ge=1, le=1000, description="ALS / HOOI iterations of CP and Tucker-2")

    @model_validator(mode="before")
    @classmethod
    def _one_criterion(cls, data):
        if isinstance(data, dict):
            given = [k for k in ("energy", "ratio", "rank") if data.get(k) is not None]
            if len(given) > 1:
                raise ValueError(f"give one of energy, ratio, rank (got {', '.join(given)})")
            if not given:
                data = {**data, "energy": 0.9}
            if data.get("rank") is not None and data.get("scope") == "global":
                raise ValueError("a fixed rank has no global scope")
        return data


    def check_against(self, layer_names: list[str]) -> list[str]:
        return [f"{what} pattern {p!r} matches no layer of the model"
                for what, pats in (("exclude", self.exclude), ("methods", self.methods))
                for p in pats if not pattern_matches(p, layer_names)]

    def check_module_types(self, types: dict[str, str]) -> list[str]:
        wanted = {"linear": {"Linear"}, "conv": {"Conv2d"}}
        present = set(types.values())
        if not any(wanted[t] & present for t in self.layer_types):
            return [f"layer_types {self.layer_types} finds no such layer in the model "
                    f"(it has {', '.join(sorted(present)) or 'no parametrised layers'})"]
        return []


@dataclass
class Decision:
    name: str
    method: str
    ranks: tuple[int, ...]
    params_before: int
    params_after: int          # == params_before when left alone
    factored: bool
    kept_energy: float


# ---- factoring one layer (float64 maths, result in the layer's dtype/device) ----

def _like(mod: nn.Module, ref: torch.Tensor) -> nn.Module:
    return mod.to(device=ref.device, dtype=ref.dtype)


def _set(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(layer.weight.shape))
        if bias is not None:
            layer.bias.copy_(bias)


def svd_factor(layer: nn.Linear | nn.Conv2d, rank: int) -> nn.Sequential:
    """W[out, in] ~ (U sqrt(S)) (sqrt(S) Vh): the scale is split evenly so both factors quantize alike."""
    w = layer.weight.detach()
    u, s, vh = torch.linalg.svd(w.reshape(w.shape[0], -1).to(torch.float64), full_matrices=False)
    root = s[:rank].sqrt()
    first_w, second_w = root[:, None] * vh[:rank], u[:, :rank] * root
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        first, second = nn.Linear(layer.in_features, rank, bias=False), nn.Linear(rank, layer.out_features, bias=bias)
    else:   # 1x1 conv: stride/padding on the bias-free first conv keep the output identical
        first = nn.Conv2d(layer.in_channels, rank, 1, layer.stride, layer.padding, layer.dilation, bias=False)
        second = nn.Conv2d(rank, layer.out_channels, 1, bias=bias)
    seq = _like(nn.Sequential(first, second), w)
    _set(seq[0], first_w)
    _set(seq[1], second_w, layer.bias.detach() if bias else None)
    return seq


def _conv(conv: nn.Conv2d, cin: int, cout: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, conv.kernel_size, conv.stride, conv.padding, conv.dilation, groups=groups, bias=False)


def _tensorly_pytorch():
    import tensorly as tl
    return tl.backend.BackendManager.backend_context("pytorch", local_threadsafe=True)


def tucker_factor(conv: nn.Conv2d, ranks: tuple[int, int], iterations: int = 50) -> nn.Sequential:
    """Tucker-2 on the out/in modes (Kim et al. 2016): 1x1 (in->r1), kxk core (r1->r0), 1x1 (r0->out)."""
    from tensorly.decomposition import partial_tucker
    w = conv.weight.detach()
    r0, r1 = ranks
    with _tensorly_pytorch():
        (core, (u0, u1)), _ = partial_tucker(w.to(torch.float64), rank=[r0, r1], modes=[0, 1], init="svd",
                                             n_iter_max=iterations)
    bias = conv.bias is not None
    seq = _like(nn.Sequential(nn.Conv2d(conv.in_channels, r1, 1, bias=False), _conv(conv, r1, r0),
                              nn.Conv2d(r0, conv.out_channels, 1, bias=bias)), w)
    _set(seq[0], u1.T)
    _set(seq[1], core)
    _set(seq[2], u0, conv.bias.detach() if bias else None)
    return seq


def cp_factor(conv: nn.Conv2d, rank: int, iterations: int = 50, seed: int = 0) -> nn.Sequential:
    """CP of the kernel as a 3-way tensor [out, in, kh*kw] (Lebedev et al. 2015 with the spatial
    modes kept together): 1x1 (in->R), depthwise kxk (R groups), 1x1 (R->out). float64: ALS
    diverges to NaN in float32 at high rank."""
    from tensorly.decomposition import parafac
    w = conv.weight.detach()
    o, i, kh, kw = w.shape
    with _tensorly_pytorch(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # svd init warns when the rank exceeds a mode's size
        weights, (a, b, c) = parafac(w.to(torch.float64).reshape(o, i, kh * kw), rank, n_iter_max=iterations,
                                     init="svd", tol=1e-10, random_state=seed)
    if not all(torch.isfinite(t).all() for t in (weights, a, b, c)):
        raise CompressionError(f"CP decomposition of {conv} did not converge")
    bias = conv.bias is not None
    seq = _like(nn.Sequential(nn.Conv2d(i, rank, 1, bias=False), _conv(conv, rank, rank, groups=rank),
                              nn.Conv2d(rank, o, 1, bias=bias)), w)
    _set(seq[0], b.T)
    _set(seq[1], (c * weights).T)
    _set(seq[2], a, conv.bias.detach() if bias else None)
    return seq


# ---- the stage ----

def _factorable(mod: nn.Module, types: list[str]) -> bool:
    if type(mod) is nn.Linear:
        return "linear" in types
    if type(mod) is nn.Conv2d:   # grouped/depthwise convs and non-zero padding modes are left alone
        return "conv" in types and mod.groups == 1 and mod.padding_mode == "zeros"
    return False


def _method(spec: LowRankSpec, name: str, mod: nn.Module) -> str:
    if type(mod) is nn.Linear or tuple(mod.kernel_size) == (1, 1):
        return "svd"
    return next((m for p, m in spec.methods.items() if fnmatchcase(name, p)), spec.conv_method)


def _layer(name: str, mod: nn.Module, method: str, min_saving: float) -> Layer:
    w = mod.weight.detach()
    check_finite(f"{name}.weight", w)
    kernel = w[0, 0].numel() if w.ndim == 4 else 1
    stride = stride_product(mod.stride) if method != "svd" else 1
    return Layer(name, method, w.shape[0], w.shape[1], kernel, stride, spectra_of(w, method), min_saving)


def plan(spec: LowRankSpec, state: CompressionState) -> tuple[list[Layer], dict[str, tuple[int, ...]]]:
    """The layers the stage considers and the ranks chosen for each (nothing is changed)."""
    model = state.model
    require_replaceable_layers(state, "low_rank")
    targets = select_targets(state, spec.exclude, include_embeddings=False, kind="low_rank")
    modules = dict(model.named_modules())
    # tied weights (an output layer sharing the embedding matrix) stay tied: factoring one user would untie them
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    names = [t.module_name for t in targets if _factorable(modules.get(t.module_name), spec.layer_types)
             and seen[id(modules[t.module_name].weight)] == 1]
    if not names:
        raise CompressionError("the low_rank stage finds no Linear or (ungrouped) Conv2d layer to factor")
    layers = []
    for j, name in enumerate(names):
        layers.append(_layer(name, modules[name], _method(spec, name, modules[name]), spec.min_saving))
        state.checkpoint(0.3 * (j + 1) / len(names))
    return layers, choose_ranks(layers, spec.energy, spec.ratio, spec.rank, spec.scope)


def low_rank(spec: LowRankSpec, state: CompressionState) -> list[Decision]:
    layers, ranks = plan(spec, state)
    decisions = []
    for j, layer in enumerate(layers):
        r = ranks[layer.name]
        ok = layer.shrinks(r)
        if ok:
            mod = state.model.get_submodule(layer.name)
            new = svd_factor(mod, r[0]) if layer.method == "svd" else \
                tucker_factor(mod, r, spec.iterations) if layer.method == "tucker" else \
                cp_factor(mod, max(r), spec.iterations, state.seed)
            new.train(mod.training)
            record_replacement(state.structure, state.model, layer.name, new)
        decisions.append(Decision(layer.name, layer.method, r, layer.params(), layer.cost(r), ok, kept_energy(layer, r)))
        state.checkpoint((3 * len(layers) + 7 * (j + 1)) / (10 * len(layers)))   # exactly 1.0 at the end
    return decisions
