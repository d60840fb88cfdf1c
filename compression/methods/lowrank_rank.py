"""Rank selection for low-rank factorization: per-layer energy, per-layer or global parameter
ratio, and one global energy threshold across all layers.

Every layer contributes one or two *spectra*: the squared singular values of W (SVD of a
Linear / 1x1 conv) or of the mode-0 and mode-1 unfoldings of a conv kernel (Tucker-2, CP).
Each spectrum is normalised to sum 1 (p_i = s_i^2 / sum_j s_j^2), so a layer's weight scale
does not matter and every spectrum carries the same unit of energy.

Global selection (scope="global") puts one threshold tau on these normalised energies: a
layer keeps every component with p_i >= tau (at least one). How layers of different sizes
compare: a layer with k singular values spreads its unit energy over k components, so with a
flat spectrum each component is worth 1/k. At one tau a large layer with a flat spectrum is
therefore cut much harder than a small one or one whose energy sits in a few components:
cuts go where there are many weak directions, which is where most parameters are. A layer
whose spectrum is flat and larger than 1/tau in length can drop to few components; exclude
it (or use per_layer) if that hurts.
  - global energy e: tau is the largest threshold at which the energy kept, summed over all
    spectra, reaches e x (number of spectra), i.e. the *mean* kept energy fraction is >= e
    (layers left unfactored keep all of theirs, so the real mean is higher).
  - global ratio r: tau is the largest threshold at which the factored layers hold at most
    r x the selected layers' parameters (layers that would not shrink count in full).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Literal

import torch

Method = Literal["svd", "tucker", "cp"]


@dataclass
class Layer:
    name: str
    method: Method
    out: int
    inp: int
    kernel: int          # kh * kw (1 for Linear)
    stride: int          # sh * sw: input pixels per output pixel (for the MACs of the first 1x1 conv)
    spectra: list[torch.Tensor]   # normalised energies, descending, float64
    min_saving: float = 0.0       # factor only when params and MACs drop by at least this fraction

    def params(self) -> int:
        return self.out * self.inp * self.kernel

    def factored(self, ranks: tuple[int, ...]) -> tuple[int, int]:
        """(weight params, MACs per output pixel) of the factored layer."""
        o, i, k, s = self.out, self.inp, self.kernel, self.stride
        if self.method == "svd":
            r = ranks[0]
            return r * (i + o), r * (i + o)
        if self.method == "tucker":
            r0, r1 = ranks
            return i * r1 + r1 * r0 * k + r0 * o, i * r1 * s + r1 * r0 * k + r0 * o
        r = max(ranks)   # CP rank is at least every multilinear rank
        return r * (i + k + o), r * (i * s + k + o)

    def shrinks(self, ranks: tuple[int, ...]) -> bool:
        params, macs = self.factored(ranks)
        limit = self.params() * (1.0 - self.min_saving)
        return params < limit and macs < limit

    def cost(self, ranks: tuple[int, ...]) -> int:
        return self.factored(ranks)[0] if self.shrinks(ranks) else self.params()


def normalised_energy(matrix: torch.Tensor) -> torch.Tensor:
    s2 = torch.linalg.svdvals(matrix.detach().to(torch.float64)) ** 2
    total = s2.sum()
    if not torch.isfinite(total) or total <= 0:
        out = torch.zeros_like(s2)
        out[0] = 1.0
        return out
    return s2 / total


def spectra_of(weight: torch.Tensor, method: Method) -> list[torch.Tensor]:
    o, i = weight.shape[:2]
    if method == "svd":
        return [normalised_energy(weight.reshape(o, -1))]
    return [normalised_energy(weight.reshape(o, -1)), normalised_energy(weight.transpose(0, 1).reshape(i, -1))]


def ranks_at(layer: Layer, tau: float) -> tuple[int, ...]:
    """Components with normalised energy >= tau, per spectrum (at least one)."""
    return tuple(max(1, int((p >= tau).sum())) for p in layer.spectra)


def ranks_for_energy(layer: Layer, energy: float) -> tuple[int, ...]:
    """Smallest rank per spectrum whose cumulative energy reaches `energy`."""
    out = []
    for p in layer.spectra:
        cum = torch.cumsum(p, 0)
        out.append(min(len(p), int((cum < energy - 1e-12).sum()) + 1))
    return tuple(out)


def fixed_ranks(layer: Layer, rank: int) -> tuple[int, ...]:
    return tuple(min(rank, len(p)) for p in layer.spectra)


def _thresholds(layers: list[Layer]) -> list[float]:
    """Candidate taus, descending (each step keeps at least one more component somewhere)."""
    return sorted({float(v) for layer in layers for p in layer.spectra for v in p.tolist()}, reverse=True)


def global_energy(layers: list[Layer], energy: float) -> dict[str, tuple[int, ...]]:
    pooled = torch.cat([p for layer in layers for p in layer.spectra]).sort(descending=True).values
    n_spectra = sum(len(layer.spectra) for layer in layers)
    cum = torch.cumsum(pooled, 0)
    k = min(len(pooled) - 1, int((cum < energy * n_spectra - 1e-9).sum()))
    tau = float(pooled[k])
    return {layer.name: ranks_at(layer, tau) for layer in layers}


def ratio_ranks(layers: list[Layer], ratio: float) -> dict[str, tuple[int, ...]]:
    """Largest tau-family ranks whose total cost fits ratio x original params (one tau over `layers`;
    per-layer ratio calls this with one layer). Cost is monotone in tau, so bisect."""
    budget = ratio * sum(layer.params() for layer in layers)
    taus = _thresholds(layers)

    def total(j: int) -> int:
        return sum(layer.cost(ranks_at(layer, taus[j])) for layer in layers)

    # largest j (smallest tau, most kept) with total(j) <= budget; index 0 = fewest components
    j = bisect.bisect_right(range(len(taus)), budget, key=total) - 1
    tau = taus[max(j, 0)]
    return {layer.name: ranks_at(layer, tau) for layer in layers}


def choose_ranks(layers: list[Layer], energy: float | None, ratio: float | None, rank: int | None,
                 scope: str) -> dict[str, tuple[int, ...]]:
    if rank is not None:
        return {layer.name: fixed_ranks(layer, rank) for layer in layers}
    if scope == "global":
        return global_energy(layers, energy) if energy is not None else ratio_ranks(layers, ratio)
    if energy is not None:
        return {layer.name: ranks_for_energy(layer, energy) for layer in layers}
    return {k: v for layer in layers for k, v in ratio_ranks([layer], ratio).items()}


def kept_energy(layer: Layer, ranks: tuple[int, ...]) -> float:
    """Mean fraction of spectral energy the ranks keep (1.0 when the layer is left alone)."""
    if not layer.shrinks(ranks):
        return 1.0
    if layer.method == "cp":
        ranks = (max(ranks),) * len(ranks)
    return sum(float(p[:r].sum()) for p, r in zip(layer.spectra, ranks)) / len(layer.spectra)


def stride_product(stride) -> int:
    return math.prod(stride) if isinstance(stride, (tuple, list)) else int(stride)
