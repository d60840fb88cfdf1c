"""GPTQ (Frantar et al. 2022): error-compensating weight quantization in the Optimal Brain Surgeon
style. Per Linear layer, H = 2 XᵀX / n from calibration activations (forward pre-hooks, one pass
over the calibration batches with the float model), dampened by `damp` × mean diag(H); columns are
quantized left to right on a (group-wise) affine grid, each column's rounding error spread over the
not-yet-quantized columns through the upper Cholesky factor of H⁻¹, in lazy blocks of
`block_size` columns. Weights without activations (embeddings, conv, anything not reached) are
rounded to nearest on the same grid. The output is the `affine` codec (CONTAINER.md), so `huffman`
re-codes the codes like any other."""
from __future__ import annotations

import inspect
from typing import Annotated, Literal

import torch
from pydantic import Field

from compression.coding.encoding import bitpacked, decode, dtype_name, group_layout
from mpclient.format.codecs import rows as rows_codec
from compression.errors import CompressionError
from compression.stage import (CompressionState, MethodSpec, Phase, WeightTarget, check_finite,
                                      pattern_matches, select_targets)
from compression.methods.groupwise import affine_node, dequant, grid, mse_grid, round_to_nearest, to_codes

Pattern = Annotated[str, Field(min_length=1, max_length=256)]
Bits = Annotated[int, Field(ge=2, le=8)]


class GPTQSpec(MethodSpec):
    """Calibrated (GPTQ) weight quantization of Linear layers; needs calibration batches."""
    phase = Phase.VALUES

    kind: Literal["gptq"]
    bits: Bits = Field(4, description="code width of Linear weights")
    group_size: int | None = Field(128, ge=1, le=65536, description="one scale (and zero point) per this many "
                                   "consecutive input columns of each row; null: one per output row")
    symmetric: bool = Field(False, description="true: codes in ±(2^(b-1)-1), no zero point; false: unsigned codes "
                                               "with a zero point per group")
    scale_dtype: Literal["float16", "float32"] = Field("float16", description="storage of scales")
    damp: float = Field(0.01, gt=0, le=1, description="dampening added to diag(H), relative to its mean")
    block_size: int = Field(128, ge=1, le=4096, description="columns per lazy-update block")
    layers: dict[Pattern, Bits] = Field(default_factory=dict, max_length=256,
                                        description="per-layer bits overrides: glob pattern -> bits; first match wins")
    embedding_bits: Bits | None = Field(None, description="bits of weights quantized without activations "
                                                          "(embeddings, ...), rounded to nearest; default `bits`")
    bits_per_weight: float | None = Field(
        None, ge=2, le=8, description="mixed precision: average code bits over the Linear layers; each layer gets a "
                                      "width from `allocation_bits` by its measured sensitivity on the calibration "
                                      "data (`layers` overrides still win). Null: every layer `bits`")
    allocation_bits: list[Bits] = Field([3, 4, 5, 6], min_length=2, max_length=7,
                                        description="candidate widths for `bits_per_weight`")
    embedding_hot_bits: Bits | None = Field(
        None, description="bits of the embedding rows the calibration data looks up (the tokens of the calibration "
                          "text); the other rows get the embedding bits. Frequent tokens dominate any text, so "
                          "precision goes where lookups happen (a `rows` node). Null: every row alike")
    exclude: list[Pattern] = Field(default_factory=list, max_length=256,
                                   description="glob patterns of layers or tensors left in float32")
    include_embeddings: bool = Field(True, description="also quantize nn.Embedding weights (rounded to nearest)")
    act_order: bool = Field(True, description="quantize columns in order of decreasing Hessian diagonal (most "
                                              "activated inputs first, while the most error can still be "
                                              "compensated); group grids are then fixed up front from the float weights")
    clip_search: bool = Field(True, description="shrink each group's range to the factor minimising its "
                                                "Hessian-weighted rounding error (MSE-optimal clipping)")
    sequential: bool = Field(False, description="true: each Linear's Hessian comes from the model with the layers "
                                               "before it already quantized (one calibration pass per layer); "
                                               "false: all from the float model in one pass")

    @property
    def needs_data(self) -> bool:
        return True


    def check_against(self, layer_names: list[str]) -> list[str]:
        return [f"{field} pattern {p!r} matches no layer of the model"
                for field, pats in (("exclude", self.exclude), ("layers", list(self.layers)))
                for p in pats if not pattern_matches(p, layer_names)]

    def bits_for(self, name: str, hessian: bool, allocated: dict[str, int] | None = None) -> int:
        found = next((b for p, b in self.layers.items() if pattern_matches(p, [name])), None)
        if found is not None:
            return found
        if allocated and name in allocated:
            return allocated[name]
        return self.bits if hessian or self.embedding_bits is None else self.embedding_bits


def _forward(model: torch.nn.Module, batch):
    """Run one calibration batch: all its tensors as positional inputs, or all but a trailing integer
    target when the forward signature does not take them all."""
    batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    try:
        inspect.signature(model.forward).bind(*batch)
        args = batch
    except (TypeError, ValueError):
        args = batch[:-1] if len(batch) >= 2 and not batch[-1].is_floating_point() else batch
    return model(*args)


def hessians(model: torch.nn.Module, modules: dict[str, torch.nn.Linear], batches) -> dict[str, torch.Tensor]:
    """name -> 2 XᵀX / n (float64) of each Linear's inputs over the calibration batches."""
    acc: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def pre(mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            acc[name] = acc.get(name, 0) + x.T @ x
            counts[name] = counts.get(name, 0) + x.shape[0]
        return pre

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                _forward(model, batch)
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    return {n: 2 * acc[n] / counts[n] for n in acc if counts[n] > 0}


def lookup_counts(model: torch.nn.Module, modules: dict[str, torch.nn.Embedding], batches) -> dict[str, torch.Tensor]:
    """name -> how often the calibration batches look up each row of each Embedding."""
    counts = {n: torch.zeros(m.num_embeddings, dtype=torch.int64) for n, m in modules.items()}

    def hook(name):
        def pre(mod, args):
            counts[name] += torch.bincount(args[0].reshape(-1).to(torch.int64), minlength=mod.num_embeddings)
        return pre

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                _forward(model, batch)
    finally:
        for h in handles:
            h.remove()
    return counts


def _call_order(model: torch.nn.Module, modules: dict[str, torch.nn.Linear], batch) -> list[str]:
    """Module names in the order one forward pass calls them (never-called ones last)."""
    seen: list[str] = []
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: seen.append(n) if n not in seen else None)
               for n, m in modules.items()]
    try:
        with torch.no_grad():
            _forward(model, batch)
    finally:
        for h in handles:
            h.remove()
    return seen + [n for n in modules if n not in seen]


def gptq_codes(w: torch.Tensor, h: torch.Tensor, bits: int, symmetric: bool, group_size: int | None,
               scale_storage: str, damp: float, block_size: int, act_order: bool = False,
               clip_search: bool = False):
    """-> (codes [rows, cols], scales, zero points or None) for a [rows, cols] weight and its Hessian."""
    W = w.detach().float().clone()
    rows, cols = W.shape
    H = h.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    importance = torch.diag(H).float()
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    groups = -(-cols // group_size) if group_size else 1
    width = group_size or cols
    scales = torch.zeros(rows, groups)
    zeros = torch.zeros(rows, groups) if not symmetric else None

    def fit(span: torch.Tensor, cols_idx: torch.Tensor):
        if clip_search:
            return mse_grid(span, bits, symmetric, scale_storage, importance[cols_idx])
        return grid(span, bits, symmetric, scale_storage)

    # static grids: act_order visits a group's columns out of order, so its grid cannot wait for them
    static = act_order or not group_size
    if static:
        for g in range(groups):
            idx = torch.arange(g * width, min((g + 1) * width, cols))
            scales[:, g], z = fit(W[:, idx], idx)
            if zeros is not None:
                zeros[:, g] = z
    perm = torch.argsort(importance, descending=True) if act_order else torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]
    try:
        L = torch.linalg.cholesky(H)
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True).float()
    except RuntimeError:
        raise CompressionError("GPTQ: the calibration Hessian is not positive definite; raise damp") from None
    codes = torch.zeros(rows, cols)
    group_of = perm // width   # original column -> its group
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            g = int(group_of[col])
            if not static and col % width == 0:   # dynamic grid from the error-updated columns of this group
                end = min(col + width, cols)
                span = torch.cat([W1[:, i:], W[:, i2:end]], dim=1) if end > i2 else W1[:, i:end - i1]
                scales[:, g], z = fit(span, perm[col:end])
                if zeros is not None:
                    zeros[:, g] = z
            s, z = scales[:, g], zeros[:, g] if zeros is not None else None
            x = W1[:, i:i + 1]
            q = to_codes(x, s, z, bits, symmetric)
            codes[:, perm[col]] = q[:, 0]
            err = (x[:, 0] - dequant(q, s, z)[:, 0]) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] @ Hinv1[i:i + 1, i:]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return codes, scales, zeros


def gptq(spec: GPTQSpec, state: CompressionState) -> None:
    if not state.calibration:
        raise CompressionError("the gptq stage needs calibration data; none was given")
    targets = select_targets(state, spec.exclude, spec.include_embeddings, "gptq")
    for t in targets:
        if t.name in state.masks or t.name in state.encodings:
            raise CompressionError(f"{t.name} is already pruned or encoded; gptq must be the only weight stage")
        check_finite(t.name, t.param.detach())
    linear = {}
    for t in targets:
        mod = state.model.get_submodule(t.module_name)
        if isinstance(mod, torch.nn.Linear):
            linear[t.module_name] = mod
    hot = {}
    if spec.embedding_hot_bits is not None:
        embeddings = {t.module_name: state.model.get_submodule(t.module_name) for t in targets
                      if isinstance(state.model.get_submodule(t.module_name), torch.nn.Embedding)}
        hot = {f"{n}.weight": c > 0 for n, c in lookup_counts(state.model, embeddings, state.calibration).items()}
    allocated = _allocate(spec, state, linear) if spec.bits_per_weight is not None else {}
    order = _call_order(state.model, linear, state.calibration[0]) if spec.sequential else list(linear)
    hs = {} if spec.sequential else hessians(state.model, linear, state.calibration)
    state.checkpoint(0.05)
    done = 0
    for name in order:   # Linear layers first, in the order the forward pass reaches them
        if spec.sequential:
            hs = hessians(state.model, {name: linear[name]}, state.calibration)
        for t in targets:
            if t.module_name == name:
                _encode(spec, state, t, hs.get(name), allocated=allocated)
                done += 1
        state.checkpoint(0.05 + 0.95 * done / len(targets))
    for t in targets:
        if t.name not in state.encodings:
            _encode(spec, state, t, None, hot.get(t.name))
    state.checkpoint(1.0)


SENSITIVITY_SAMPLES = 16


def _first_samples(batches, n: int) -> list:
    """The first `n` samples of a list of batches (each a tensor or a tuple of tensors, samples on dim 0)."""
    out = []
    for batch in batches:
        if n <= 0:
            break
        parts = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        size = len(parts[0])
        parts = tuple(p[:n] for p in parts)
        out.append(parts if isinstance(batch, (tuple, list)) else parts[0])
        n -= min(size, n)
    return out


def _allocate(spec: GPTQSpec, state: CompressionState, linear: dict[str, torch.nn.Linear]) -> dict[str, int]:
    """tensor name -> bits, from sensitivities measured on the first SENSITIVITY_SAMPLES calibration samples
    (one forward per layer and width: the cost grows with the samples, the ranking hardly does)."""
    from compression.methods.bit_allocation import allocate, sensitivities
    free = {n: m for n, m in linear.items() if not any(pattern_matches(p, [f"{n}.weight"]) for p in spec.layers)}
    batches = _first_samples(state.calibration, SENSITIVITY_SAMPLES)
    rtn = lambda w, b: round_to_nearest(w, dtype_name(w.dtype), b, spec.symmetric, spec.group_size,  # noqa: E731
                                        spec.scale_dtype)
    errors = sensitivities(state.model, free, batches, tuple(sorted(set(spec.allocation_bits))), rtn,
                           _forward, lambda f: state.checkpoint(0.04 * f))
    chosen = allocate(errors, {n: m.weight.numel() for n, m in free.items()}, spec.bits_per_weight)
    return {f"{n}.weight": b for n, b in chosen.items()}


def _encode(spec: GPTQSpec, state: CompressionState, t: WeightTarget, h: torch.Tensor | None,
            hot_rows: torch.Tensor | None = None, allocated: dict[str, int] | None = None) -> None:
    w = t.param.detach()
    bits = spec.bits_for(t.name, h is not None, allocated)
    if hot_rows is not None and bool(hot_rows.any()) and not bool(hot_rows.all()):
        rtn = lambda rows, b: round_to_nearest(rows, dtype_name(w.dtype), b, spec.symmetric, spec.group_size,  # noqa: E731
                                               spec.scale_dtype)
        enc = rows_codec.encode(tuple(w.shape), dtype_name(w.dtype), selected=bitpacked(hot_rows.to(torch.int64), 1, "uint8"),
                          a=rtn(w[hot_rows], spec.embedding_hot_bits), b=rtn(w[~hot_rows], bits))
    elif h is None:
        enc = round_to_nearest(w, dtype_name(w.dtype), bits, spec.symmetric, spec.group_size, spec.scale_dtype)
    else:
        codes, scales, zeros = gptq_codes(w, h, bits, spec.symmetric, spec.group_size, spec.scale_dtype,
                                          spec.damp, spec.block_size, spec.act_order, spec.clip_search)
        enc = affine_node(tuple(w.shape), dtype_name(w.dtype), codes, scales, zeros, bits, spec.symmetric,
                          spec.group_size, spec.scale_dtype)
    with torch.no_grad():
        t.param.copy_(decode(enc))
    state.encodings[t.name] = enc


__all__ = ["GPTQSpec", "gptq", "gptq_codes", "group_layout", "hessians"]
