"""JSON-able model summaries and checks of tensor names/shapes against a built-in architecture."""
from __future__ import annotations

import math

from collections.abc import Iterable
from dataclasses import dataclass

from compression.formats.architectures import ARCHITECTURES, expected_tensors
from compression.formats._errors import ModelFormatError
from compression.formats.limits import SUMMARY_LAYER_CAP


@dataclass(frozen=True)
class TensorMeta:
    name: str
    shape: tuple[int, ...]
    dtype: str           # torch dtype name without "torch.", e.g. "float32"
    is_parameter: bool = True

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def require_architecture(architecture: str | None, fmt: str) -> str:
    known = ", ".join(sorted(ARCHITECTURES))
    if not architecture:
        raise ModelFormatError(f"a {fmt} file holds bare weights: name its architecture (known: {known})")
    if architecture not in ARCHITECTURES:
        raise ModelFormatError(f"unknown architecture {architecture!r}; known: {known}")
    return architecture


def check_against_architecture(tensors: Iterable[TensorMeta], architecture: str) -> list[TensorMeta]:
    """Names and shapes must match the architecture's state_dict exactly; returns metas with
    is_parameter taken from the architecture (buffers such as BatchNorm statistics are not parameters)."""
    expected = expected_tensors(architecture)
    given = {t.name: t for t in tensors}
    missing = [n for n in expected if n not in given]
    unexpected = [n for n in given if n not in expected]
    wrong = [f"{n}: {list(given[n].shape)} (expected {list(expected[n][0])})"
             for n in expected if n in given and given[n].shape != expected[n][0]]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            problems.append(f"{label}: {', '.join(items[:5])}{more}")
    if problems:
        raise ModelFormatError(f"weights do not fit architecture {architecture!r}: " + "; ".join(problems))
    return [TensorMeta(n, given[n].shape, given[n].dtype, expected[n][1]) for n in expected]


def build_summary(tensors: list[TensorMeta] | None, architecture: str | None, **extra) -> dict:
    """tensors=None: names not cheaply known (e.g. TorchScript); layers stay empty."""
    if tensors is None:
        return {"parameters": None, "tensors": None, "architecture": architecture, "layers": [],
                "layers_complete": False, **extra}
    layers = [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in tensors[:SUMMARY_LAYER_CAP]]
    return {
        "parameters": sum(t.numel for t in tensors if t.is_parameter),
        "tensors": len(tensors),
        "architecture": architecture,
        "layers": layers,
        # check_pipeline_against_model only trusts a complete list
        "layers_complete": len(tensors) <= SUMMARY_LAYER_CAP,
        **extra,
    }
