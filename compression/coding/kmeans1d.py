"""Exact 1-D k-means (Lloyd) for weight sharing, after one sort.

In 1-D every cluster of a Lloyd assignment is a contiguous run of the sorted
values, cut at the midpoints between neighbouring centroids. So after sorting
once, an iteration is k binary searches for the cuts plus k range sums, i.e.
O(k log n) instead of O(n k). Range sums come from per-block prefix sums
(float64) plus a short partial-block sum, which avoids an n-long float64
prefix array (8 bytes/value, and slow to build).

All assignment, in the iterations and in `assign`, goes through the same
float32 thresholds, so the indices returned always match the centroids.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

INITS = ("linear", "density", "random")
MAX_K = 1 << 16
_CHUNK = 1 << 18          # values per vectorized pass in `assign` (cache-sized temporaries)
_GRID = 1 << 16           # cells of the lookup grid in `assign`
_MAX_FIXUPS = 4           # beyond this many thresholds per grid cell, binary search instead


def index_dtype(k: int) -> np.dtype:
    return np.dtype(np.uint8 if k <= 256 else np.uint16)


def _as_values(values: np.ndarray) -> np.ndarray:
    x = np.asarray(values)
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"values must be real numbers, got {x.dtype}")
    x = x.ravel().astype(np.float32, copy=False)
    if x.size and not np.isfinite(x).all():
        raise ValueError("values contain NaN or infinity")
    return x


def thresholds(centroids: np.ndarray) -> np.ndarray:
    """float32 cut points t (k-1) for sorted centroids: a float32 x belongs to
    cluster #{t <= x}, i.e. x goes right exactly when x >= the true midpoint."""
    c = np.asarray(centroids, dtype=np.float32).astype(np.float64)
    mid = (c[:-1] + c[1:]) / 2
    t = mid.astype(np.float32)
    low = t.astype(np.float64) < mid
    t[low] = np.nextafter(t[low], np.float32(np.inf))  # smallest float32 >= mid
    return t


# ------------------------------------------------------------------ assign

def _grid_tables(t: np.ndarray):
    """Lookup grid over [t[0], t[-1]]: per cell, a lower bound on the cluster
    index and how many +1 fix-ups can be needed. Bounds use the neighbouring
    cells' edges so float32 rounding of the cell computation is harmless."""
    lo, hi = float(t[0]), float(t[-1])
    if not hi > lo:
        return None
    scale = _GRID / (hi - lo)
    c = np.arange(_GRID + 4, dtype=np.float64)
    lower = np.searchsorted(t, lo + (c - 3) / scale, side="right")   # t <= left edge of cell c-1
    upper = np.searchsorted(t, lo + c / scale, side="left")          # t < right edge of cell c+1
    upper[-1] = t.size  # the clipped top cell holds everything above hi
    fixups = int((upper - lower).max())
    if fixups > _MAX_FIXUPS:
        return None
    return np.float32(lo), np.float32(scale), lower, fixups


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for each value (flattened); ties go to the
    larger centroid. uint8 for k <= 256, else uint16."""
    c = np.asarray(centroids, dtype=np.float32).ravel()
    if not 1 <= c.size <= MAX_K or not np.isfinite(c).all():
        raise ValueError(f"need 1..{MAX_K} finite centroids")
    x = _as_values(values)
    dtype = index_dtype(c.size)
    if np.any(np.diff(c) < 0):  # unsorted codebook: work sorted, map back
        order = np.argsort(c, kind="stable")
        return order.astype(dtype)[assign(x, c[order])]
    out = np.zeros(x.size, dtype=dtype)
    if c.size == 1 or x.size == 0:
        return out
    t = thresholds(c)
    grid = _grid_tables(t)
    if grid is None:
        for lo in range(0, x.size, _CHUNK):
            out[lo:lo + _CHUNK] = np.searchsorted(t, x[lo:lo + _CHUNK], side="right")
        return out
    lo32, scale32, lower, fixups = grid
    lower = lower.astype(dtype)
    t_ext = np.append(t, np.float32(np.inf))  # index k-1 never moves further
    f = np.empty(min(_CHUNK, x.size), dtype=np.float32)
    cell = np.empty(f.size, dtype=np.intp)
    for start in range(0, x.size, _CHUNK):
        xs = x[start:start + _CHUNK]
        n = xs.size
        fs, cs, o = f[:n], cell[:n], out[start:start + n]
        np.subtract(xs, lo32, out=fs)
        fs *= scale32
        fs += 2
        np.clip(fs, 0, _GRID + 3, out=fs)
        cs[...] = fs                       # truncation = floor, fs >= 0
        np.take(lower, cs, out=o)
        for _ in range(fixups):
            o += xs >= np.take(t_ext, o)
    return out


# ----------------------------------------------------------------- k-means

class _RangeSums:
    """Sums of sorted[a:b] in float64 from block prefix sums + a partial block."""

    def __init__(self, s: np.ndarray, k: int):
        n = s.size
        # Partial-block work per query is O(block): keep k * block well under n.
        self.block = int(min(256, max(8, 1 << max(0, (n // (8 * k)).bit_length() - 1))))
        nb = n // self.block
        full = s[:nb * self.block].reshape(nb, self.block).sum(axis=1, dtype=np.float64)
        self.prefix = np.concatenate(([0.0], np.cumsum(full)))
        self.s = s
        self.lane = np.arange(self.block)

    def upto(self, idx: np.ndarray) -> np.ndarray:
        """sum(sorted[:i]) for each i in idx (0 <= i <= n)."""
        q, r = np.divmod(idx, self.block)
        at = np.minimum(q[:, None] * self.block + self.lane, self.s.size - 1)
        part = np.where(self.lane < r[:, None], self.s[at], np.float32(0))
        return self.prefix[q] + part.sum(axis=1, dtype=np.float64)


@dataclass
class KMeans1D:
    centroids: np.ndarray            # float32, sorted ascending, length k
    indices: np.ndarray              # per value, uint8 (k <= 256) or uint16
    distortion: list[float] = field(default_factory=list)  # SSE per assignment step; [0] = initial centroids
    iterations: int = 0              # centroid updates performed
    converged: bool = False          # assignment stopped changing


def _init(s: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    n = s.size
    if init == "linear":      # evenly spaced over the weight range
        c = np.linspace(float(s[0]), float(s[-1]), k)
    elif init == "density":   # evenly spaced in the CDF: dense where the weights are
        c = s[((np.arange(k) + 0.5) * n / k).astype(np.int64)]
    elif init == "random":    # Forgy: k distinct samples (the sorted array holds the same multiset)
        rng = np.random.default_rng(seed)
        c = s[rng.choice(n, size=k, replace=k > n)]
    else:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return np.sort(np.asarray(c, dtype=np.float32))


def _reseed_empty(c: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Move centroids that serve no value onto the worst-served values (cluster
    endpoints farthest from their centroid). Never raises the distortion: an
    empty centroid serves nobody, and a new one only shortens distances."""
    edges = _edges(c, s)
    counts = np.diff(edges)
    empty = np.flatnonzero(counts == 0)
    if empty.size == 0:
        return c
    full = np.flatnonzero(counts)
    ends = np.unique(np.concatenate((s[edges[full]], s[edges[full + 1] - 1])))
    dist = np.abs(ends - c[np.searchsorted(thresholds(c), ends, side="right")])
    worst = ends[np.argsort(-dist, kind="stable")[:empty.size]]
    worst = worst[dist[np.argsort(-dist, kind="stable")[:empty.size]] > 0]
    c = c.copy()
    c[empty[:worst.size]] = worst
    return np.sort(c)


def _edges(c: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Run boundaries in sorted values: cluster j is s[edges[j]:edges[j+1]]."""
    return np.concatenate(([0], np.searchsorted(s, thresholds(c), side="left"), [s.size]))


def fit(values: np.ndarray, k: int, init: str = "linear", seed: int = 0, iters: int = 1000,
        tol: float = 0.0) -> KMeans1D:
    """Lloyd's k-means on 1-D values. Stops after `iters` updates, when the
    assignment no longer changes, or when the relative distortion drop is < tol."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be in [1, {MAX_K}]")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if iters < 0:
        raise ValueError("iters must be >= 0")
    x = _as_values(values)
    n = x.size
    if n == 0:
        return KMeans1D(np.zeros(k, np.float32), np.zeros(0, index_dtype(k)), [0.0], 0, True)
    s = np.sort(x)
    sums = _RangeSums(s, k)
    total = float(sums.upto(np.array([n]))[0])
    mean = total / n
    tss = 0.0  # total sum of squares about the mean, exact-ish in float64
    for lo in range(0, n, _CHUNK):
        d = s[lo:lo + _CHUNK].astype(np.float64) - mean
        tss += float(d @ d)

    c = _init(s, k, init, seed)
    hist: list[float] = []
    prev_edges = None
    it = 0
    converged = False
    while True:
        edges = _edges(c, s)
        counts = np.diff(edges)
        csum = np.diff(sums.upto(edges))
        nz = counts > 0
        m = np.where(nz, csum / np.maximum(counts, 1), c)
        # SSE = within-cluster scatter (total - between) + centroid offsets from the means.
        within = max(tss - float((counts * (m - mean) ** 2).sum()), 0.0)
        hist.append(within + float((counts * (c.astype(np.float64) - m) ** 2).sum()))
        if prev_edges is not None and np.array_equal(edges, prev_edges):
            converged = True
            break
        if it >= iters or (tol > 0 and len(hist) > 1 and hist[-2] - hist[-1] <= tol * hist[-2]):
            break
        prev_edges = edges
        c = np.sort(m.astype(np.float32))
        if not nz.all():
            c = _reseed_empty(c, s)
        it += 1
    return KMeans1D(c, assign(x, c), hist, it, converged)


def kmeans_1d(values: np.ndarray, k: int, init: str = "linear", seed: int = 0,
              iters: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Deep Compression weight sharing: (sorted float32 centroids, per-value indices)."""
    r = fit(values, k, init=init, seed=seed, iters=iters)
    return r.centroids, r.indices
