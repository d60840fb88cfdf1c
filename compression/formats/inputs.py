"""Deterministic example inputs for metrics and verification."""
from __future__ import annotations

import torch

from compression.formats._errors import ModelFormatError
from compression.formats.limits import MAX_INPUT_ELEMENTS

SAMPLE_BATCH = 8
_INPUT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "float64": torch.float64, "int64": torch.int64, "int32": torch.int32}


def random_input(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=gen).to(dtype)
    return torch.randint(0, 2, shape, generator=gen, dtype=dtype)   # 0/1 are valid for any index input


def inputs_from_options(options: dict, seed: int, sample_inputs=None) -> tuple[torch.Tensor, ...] | None:
    """options {"input_shape": [N, ...] (batch included), "input_dtype": "float32"}; None if absent.
    `sample_inputs` (a compression.job.sources.DatasetFile: options.sample_dataset as the worker resolved it)
    wins: its first SAMPLE_BATCH samples are real inputs for metrics and export."""
    if sample_inputs is not None:
        return _dataset_inputs(sample_inputs.path, sample_inputs.format)
    shape = options.get("input_shape")
    if shape is None:
        return None
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d > 0 for d in shape):
        raise ModelFormatError("options.input_shape must be a non-empty list of positive integers")
    numel = 1
    for d in shape:
        numel *= d
    if numel > MAX_INPUT_ELEMENTS:
        raise ModelFormatError(f"options.input_shape has {numel} elements (at most {MAX_INPUT_ELEMENTS})")
    name = options.get("input_dtype", "float32")
    if name not in _INPUT_DTYPES:
        raise ModelFormatError(f"options.input_dtype must be one of {', '.join(_INPUT_DTYPES)}")
    return (random_input(tuple(shape), _INPUT_DTYPES[name], seed),)


def _dataset_inputs(path, fmt: str) -> tuple[torch.Tensor, ...]:
    from compression.data.datasets import DatasetError, load_dataset

    try:
        data = load_dataset(path, fmt)
    except DatasetError as exc:
        raise ModelFormatError(f"sample-input dataset: {exc.message}") from None
    return data.take(slice(0, SAMPLE_BATCH)).inputs
