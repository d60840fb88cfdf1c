"""Relative (gap) indexing of sparse positions, as in Deep Compression.

Kept positions are stored as differences from the previous entry in `bits`
bits. Gap symbol semantics (M = 2**bits - 1):

    s < M   real entry at prev + s + 1      (differences 1 .. M)
    s == M  filler entry at prev + M        (value slot holds a filler zero)

The paper lets fillers share the largest difference with real entries, so a
kept weight that happens to be 0 cannot be told from a filler. Reserving the
top symbol for fillers makes the mask exactly recoverable from the gaps alone,
at the cost of one filler per M (instead of M + 1) skipped positions.
`prev` starts at -1, so the first gap is position + 1.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from mpclient.format import huffman

MAX_BITS = 16


def _check_bits(bits: int) -> int:
    if not 1 <= int(bits) <= MAX_BITS:
        raise ValueError(f"bits must be in [1, {MAX_BITS}]")
    return int(bits)


def gap_dtype(bits: int) -> np.dtype:
    return np.dtype(np.uint8 if bits <= 8 else np.uint16)


def as_positions(mask_or_positions: np.ndarray) -> np.ndarray:
    """Kept positions (int64, strictly increasing) from a flat bool mask or a position list."""
    a = np.asarray(mask_or_positions)
    if a.dtype == np.bool_:
        return np.flatnonzero(a.ravel())
    if not np.issubdtype(a.dtype, np.integer) or a.ndim != 1:
        raise ValueError("expected a boolean mask or a 1-D integer position array")
    p = a.astype(np.int64)
    if p.size and (p[0] < 0 or np.any(np.diff(p) <= 0)):
        raise ValueError("positions must be non-negative and strictly increasing")
    return p


def _split(diffs: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Fillers needed before each real entry, and the real entry's gap symbol."""
    m = (1 << bits) - 1
    fillers = (diffs - 1) // m
    return fillers, diffs - fillers * m - 1


def encode_positions(mask_or_positions: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Gap symbols (< 2**bits) for the kept positions, and the entry indices of
    the fillers (where a zero must be inserted into the value stream)."""
    bits = _check_bits(bits)
    pos = as_positions(mask_or_positions)
    diffs = np.diff(pos, prepend=-1)
    fillers, real_sym = _split(diffs, bits)
    # Each real entry lands after its own fillers and everything before it.
    real_at = np.arange(pos.size) + np.cumsum(fillers)
    n_entries = pos.size + int(fillers.sum())
    gaps = np.full(n_entries, (1 << bits) - 1, dtype=gap_dtype(bits))
    gaps[real_at] = real_sym
    return gaps, np.flatnonzero(gaps == (1 << bits) - 1)


def decode_gaps(gaps: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of every entry (fillers included) and a bool array marking fillers."""
    bits = _check_bits(bits)
    g = np.asarray(gaps)
    if not np.issubdtype(g.dtype, np.integer) or g.ndim != 1:
        raise ValueError("gaps must be a 1-D integer array")
    m = (1 << bits) - 1
    if g.size and (int(g.min()) < 0 or int(g.max()) > m):
        raise ValueError(f"gap symbol outside [0, {m}]")
    filler = g == m
    diffs = g.astype(np.int64) + 1
    diffs[filler] = m
    return np.cumsum(diffs) - 1, filler


def encode(values: np.ndarray, mask: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, flat bool mask) -> (gap symbols, values of every entry).

    Entry values are values[mask] with a zero at each filler; values outside
    the mask are dropped."""
    v = np.asarray(values).ravel()
    m = np.asarray(mask).ravel()
    if m.dtype != np.bool_ or m.shape != v.shape:
        raise ValueError("mask must be a bool array shaped like values")
    gaps, filler_at = encode_positions(m, bits)
    entries = np.zeros(gaps.size, dtype=v.dtype)
    real = np.ones(gaps.size, dtype=bool)
    real[filler_at] = False
    entries[real] = v[m]
    return gaps, entries


def decode(gaps: np.ndarray, entries: np.ndarray, length: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `encode`: dense values (zero outside the mask) and the mask."""
    entries = np.asarray(entries).ravel()
    positions, filler = decode_gaps(gaps, bits)
    if entries.size != positions.size:
        raise ValueError(f"{entries.size} values for {positions.size} index entries")
    if positions.size and positions[-1] >= length:
        raise ValueError(f"index reaches position {positions[-1]} of a length-{length} array")
    real = ~filler
    values = np.zeros(length, dtype=entries.dtype)
    mask = np.zeros(length, dtype=bool)
    values[positions[real]] = entries[real]
    mask[positions[real]] = True
    return values, mask


def gap_symbol_counts(mask_or_positions: np.ndarray, bits: int) -> np.ndarray:
    """Histogram of the gap symbols `encode_positions` would emit (no big temporaries)."""
    bits = _check_bits(bits)
    pos = as_positions(mask_or_positions)
    d, c = np.unique(np.diff(pos, prepend=-1), return_counts=True)
    return _symbol_counts(d, c, bits)


def _symbol_counts(diffs: np.ndarray, counts: np.ndarray, bits: int) -> np.ndarray:
    fillers, real_sym = _split(diffs, bits)
    hist = np.bincount(real_sym, weights=counts, minlength=1 << bits).astype(np.int64)
    hist[-1] += int((fillers * counts).sum())
    return hist


def choose_bits(mask_or_positions: np.ndarray, value_bits: float,
                candidates=range(2, MAX_BITS + 1),
                estimator: Callable[[np.ndarray], float] | None = None) -> tuple[int, dict[int, float]]:
    """Gap width minimizing index bits + value bits over all entries.

    `value_bits` is the cost of one stored value (fillers pay it too), e.g.
    the k-means index width or its entropy per entry. `estimator` maps a
    symbol histogram to coded bits; default: what the Huffman coder spends.
    Returns the best width and the estimated total bits of every candidate.
    """
    est = estimator or huffman.huffman_bits
    pos = as_positions(mask_or_positions)
    d, c = np.unique(np.diff(pos, prepend=-1), return_counts=True)
    totals = {}
    for bits in candidates:
        hist = _symbol_counts(d, c, _check_bits(bits))
        totals[bits] = float(est(hist)) + float(hist.sum()) * value_bits
    best = min(totals, key=lambda b: (totals[b], b))
    return best, totals
