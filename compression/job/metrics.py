"""Cost metrics of a model: multiply-accumulates (FlopCounterMode) and CPU/GPU latency.

Latency is measured side by side: every model of one call runs in the same process, in rounds of blocks
(a a a a, b b b b, a a a a, ...) so machine noise hits all of them alike; the median is reported. A block
runs one model for 50 ms (at least 3 timed calls) after one untimed call: a model served runs call after call
with its caches warm, and alternating every call (a, b, a, b) measured a small CNN's int8 onnxruntime graph
1.4-1.8x slower than it runs while its fp32 graph barely changed (bench/cnn_int8.py).
"""
from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["DEFAULT_BUDGET_S", "count_macs", "default_threads", "latency", "tile_inputs"]

DEFAULT_BUDGET_S = 1.0   # per model per batch size; jobs keep it small, benches raise it
_MAX_REPEATS = 200
_WARMUP = 1
_BLOCK_S = 0.05   # a block runs one model for this long (at least 3 timed calls), after one untimed call


def default_threads() -> int:
    """MODELPRESS_LATENCY_THREADS, else min(4, cpu count): a fixed count so numbers compare."""
    value = os.environ.get("MODELPRESS_LATENCY_THREADS")
    if value and value.isdigit() and int(value) > 0:
        return int(value)
    return min(4, os.cpu_count() or 1)


def _call(model: torch.nn.Module, inputs: tuple):
    return model(*inputs)


def _fft_flops(shape, dims, n_of) -> int:
    n = n_of(shape, dims)
    vectors = math.prod(shape) // max(1, math.prod(shape[d] for d in dims))
    return int(2.5 * n * math.log2(max(n, 2)) * vectors)   # a real FFT of length n: ~2.5 n log2 n flops


def _r2c(x_shape, dim, *args, **kwargs) -> int:
    return _fft_flops(x_shape, dim, lambda shape, dims: math.prod(shape[d] for d in dims))


def _c2r(x_shape, dim, normalization, last_dim_size, *args, **kwargs) -> int:
    return _fft_flops(x_shape, dim, lambda shape, dims: math.prod(shape[d] for d in dims[:-1]) * last_dim_size)


def _bmm(a, b, *args, out_val=None, **kwargs) -> int:
    """A complex multiply-add is four real ones (the FFT path of block-circulant layers multiplies spectra)."""
    batch, m, k = a.shape
    return 2 * batch * m * k * b.shape[-1] * (4 if a.is_complex() else 1)


_bmm._get_raw = True   # FlopCounterMode hands raw tensors (not shapes) to formulas marked so: dtype is needed
# torch's counter has no formulas for FFTs: without these an FFT product would look free
_EXTRA_FORMULAS = {torch.ops.aten._fft_r2c: _r2c, torch.ops.aten._fft_c2r: _c2r, torch.ops.aten.bmm: _bmm}


@torch.no_grad()
def count_macs(model: torch.nn.Module, inputs: tuple,
               call: Callable[[torch.nn.Module, tuple], object] = _call) -> int:
    """Multiply-accumulates of one forward pass: FlopCounterMode counts 2 flops per MAC for
    matmul/conv/attention (and, added here, FFTs and complex matmuls), which is what it counts
    (elementwise ops are not included)."""
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    with counter:
        call(model, inputs)
    return int(counter.get_total_flops()) // 2


def tile_inputs(inputs: tuple, batch: int) -> tuple:
    """Inputs with `batch` rows, repeating the sample rows (batch-first tensors; others unchanged)."""
    out = []
    for t in inputs:
        if isinstance(t, torch.Tensor) and t.ndim and t.shape[0] > 0:
            reps = -(-batch // t.shape[0])
            out.append(t.repeat(reps, *([1] * (t.ndim - 1)))[:batch].contiguous())
        else:
            out.append(t)
    return tuple(out)


def _to(inputs: tuple, device: torch.device) -> tuple:
    return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs)


@torch.no_grad()
def _measure(models: dict[str, torch.nn.Module], inputs: tuple, call, budget_s: float, cuda: bool) -> dict:
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for model in models.values():
        for _ in range(_WARMUP):
            call(model, inputs)
    sync()
    times: dict[str, list[float]] = {name: [] for name in models}
    spent = {name: 0.0 for name in models}
    while len(next(iter(times.values()))) < _MAX_REPEATS:
        for name, model in models.items():   # one block of each in turn
            call(model, inputs)   # the block's first call warms what the previous model's block evicted
            sync()
            block = []
            while len(block) < 3 or sum(block) < _BLOCK_S:
                start = time.perf_counter()
                call(model, inputs)
                sync()
                block.append(time.perf_counter() - start)
            times[name].extend(block)
            spent[name] += sum(block)
        if max(spent.values()) >= budget_s:
            break
    return {name: {"median_ms": round(statistics.median(t) * 1000, 4), "repeats": len(t)}
            for name, t in times.items()}


def latency(models: dict[str, torch.nn.Module], inputs: tuple, *, batch_sizes=(1, 32), threads: int | None = None,
            budget_s: float = DEFAULT_BUDGET_S, call: Callable[[torch.nn.Module, tuple], object] = _call,
            gpu: bool | None = None) -> dict:
    """{"cpu": {"batch_1": {name: {"median_ms", "repeats"}}, ...}, "threads": n[, "cuda": {...}]}.
    `call(model, inputs)` runs one forward (HF models: keyword arguments). Models are not modified;
    GPU timing moves a model to CUDA and back."""
    threads = threads or default_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    result: dict = {"threads": threads, "budget_s": budget_s, "cpu": {}}
    try:
        for bs in batch_sizes:
            result["cpu"][f"batch_{bs}"] = _measure(models, tile_inputs(inputs, bs), call, budget_s, False)
    finally:
        torch.set_num_threads(previous)
    if gpu if gpu is not None else torch.cuda.is_available():
        device = torch.device("cuda")
        result["cuda"] = {"device": torch.cuda.get_device_name(device)}
        devices = {n: next(m.parameters(), torch.empty(0)).device for n, m in models.items()}
        try:
            for m in models.values():
                m.to(device)
            for bs in batch_sizes:
                result["cuda"][f"batch_{bs}"] = _measure(models, _to(tile_inputs(inputs, bs), device), call,
                                                         budget_s, True)
        finally:
            for n, m in models.items():
                m.to(devices[n])
    return result


def job_budget_s() -> float:
    """Per model per batch size in a job: MODELPRESS_LATENCY_BUDGET_S (0 turns latency off), default 0.3."""
    try:
        return max(0.0, float(os.environ.get("MODELPRESS_LATENCY_BUDGET_S", "0.3")))
    except ValueError:
        return 0.3


def job_metrics(original: torch.nn.Module, compressed: torch.nn.Module, inputs: tuple, *,
                call: Callable[[torch.nn.Module, tuple], object] = _call, measure_latency: bool = True) -> tuple[dict, list[str]]:
    """The job's cost metrics ({"macs_before", "macs_after", "latency"}) and notes on what was skipped.
    Each part is best effort: a model FlopCounterMode or tiling cannot run gets a note, not a failure."""
    out, notes = {}, []
    for key, model in (("macs_before", original), ("macs_after", compressed)):
        try:
            out[key] = count_macs(model, inputs, call)
        except Exception as exc:
            notes.append(f"{key}: not counted ({type(exc).__name__}: {str(exc)[:200]})")
    budget = job_budget_s()
    if not measure_latency or budget == 0:
        notes.append("latency: not measured (turned off)")
        return out, notes
    models = {"original": original, "compressed": compressed}
    for bs in (1, 32):   # one at a time: a program exported with a fixed batch still gets its batch-1 number
        try:
            part = latency(models, inputs, batch_sizes=(bs,), budget_s=budget, call=call)
        except Exception as exc:
            notes.append(f"latency batch {bs}: not measured ({type(exc).__name__}: {str(exc)[:200]})")
            continue
        merged = out.setdefault("latency", {"threads": part["threads"], "budget_s": budget, "cpu": {}})
        merged["cpu"].update(part["cpu"])
        if "cuda" in part:
            merged.setdefault("cuda", {}).update(part["cuda"])
    return out, notes
