"""Smaller students derived from the teacher, recorded as architecture edits so the container
rebuilds them: transformers keep a subset of their layers (keep_children, DistilBERT-style
initialisation from the teacher's own layers); CNNs/MLPs keep the strongest channels of every
layer (Torch-Pruning through the structured_prune stage, which records the resized layers)."""
from __future__ import annotations

from torch import nn

from compression.errors import CompressionError
from compression.stage import CompressionState
from compression.formats.structure import apply_edit

# where Hugging Face encoders keep their layer list (BERT/RoBERTa/MiniLM, DistilBERT, GPT-2, Llama-like)
LAYER_LISTS = ("encoder.layer", "transformer.layer", "h", "transformer.h", "layers", "model.layers")


def layer_list(model: nn.Module) -> str | None:
    for path in LAYER_LISTS:
        try:
            if isinstance(model.get_submodule(path), nn.ModuleList):
                return path
        except AttributeError:
            continue
    return None


def spread(n: int, k: int) -> list[int]:
    """k of n layers evenly spaced, always ending at the last one (6 -> 3 keeps 1, 3, 5)."""
    return sorted({round((i + 1) * n / k) - 1 for i in range(k)})


def keep_layers(state: CompressionState, layers: int | None, indices: list[int] | None) -> dict:
    path = layer_list(state.model)
    if path is None:
        raise CompressionError("no transformer layer list found (looked for " + ", ".join(LAYER_LISTS) + ")")
    n = len(state.model.get_submodule(path))
    if indices is None:
        k = layers or max(1, n // 2)
        if not 1 <= k <= n:
            raise CompressionError(f"layers must be between 1 and {n}")
        indices = spread(n, k)
    if not indices or any(not 0 <= i < n for i in indices) or sorted(set(indices)) != list(indices):
        raise CompressionError(f"layer_indices must be increasing indices below {n}")
    edit = {"op": "keep_children", "module": path, "indices": list(indices)}
    apply_edit(state.model, edit)
    state.structure.append(edit)
    return {"layer_list": path, "kept": list(indices), "of": n}


def narrower(state: CompressionState, width: float) -> dict:
    from compression.methods.structured import StructuredPruneSpec, structured_prune
    spec = StructuredPruneSpec(kind="structured_prune", ratio=round(1 - width, 6), importance="l2")
    result = structured_prune(spec, state)
    return {"width": width, "parameters": [result.params_before, result.params_after]}


def derive_student(state: CompressionState, hf: bool, layers: int | None, indices: list[int] | None,
                   width: float) -> dict:
    """Turns state.model (a copy of the teacher) into the student, in place; returns what changed."""
    if hf:
        info = keep_layers(state, layers, indices)
        if width < 1:
            info["narrowed"] = narrower(state, width)
        return info
    if layers is not None or indices is not None:
        raise CompressionError("layers / layer_indices apply to transformer models (Hugging Face folders)")
    return narrower(state, width)
