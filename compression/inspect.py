"""Inspection of an upload by loading it once (in a worker's sandboxed child, never in the API):
format, parameters, layers by type with shapes, the input signature and the output shape.
Stored with the model so that submit-time checks see what the model really is (e.g. a
convolution-only method on a model without convolutions is a 422, not a failed job)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from compression.formats import LoadedModel, load_model
from compression.formats.limits import SUMMARY_LAYER_CAP
from compression.outputs import run


def _signature(inputs: tuple) -> list[dict]:
    # the batch dimension is dynamic in every export (ONNX, .pt2); the rest are the sample's
    return [{"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "dynamic_dims": [0]}
            for t in inputs if isinstance(t, torch.Tensor)]


def _module_type(mod: torch.nn.Module) -> str:
    return getattr(mod, "original_name", None) or type(mod).__name__   # TorchScript keeps the class name


def describe_loaded(loaded: LoadedModel) -> dict:
    model = loaded.model
    layers, by_type = [], Counter()
    params_by_type: Counter = Counter()
    for name, mod in model.named_modules():
        own = dict(mod.named_parameters(recurse=False))
        if not own or not name:
            continue
        kind = _module_type(mod)
        count = sum(p.numel() for p in own.values())
        by_type[kind] += 1
        params_by_type[kind] += count
        if len(layers) < SUMMARY_LAYER_CAP:
            layers.append({"name": name, "type": kind, "parameters": count,
                           "shapes": {k: list(p.shape) for k, p in own.items()}})
    probe = loaded.probe or run
    out = probe(model, loaded.sample_inputs)
    return {
        "format": loaded.format,
        "architecture": loaded.architecture,
        "hf_model_type": (loaded.hf.config.get("model_type") if loaded.hf else None),
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers_by_type": {k: {"count": by_type[k], "parameters": params_by_type[k]} for k in sorted(by_type)},
        "modules": layers,
        "modules_complete": sum(by_type.values()) <= SUMMARY_LAYER_CAP,
        "inputs": _signature(loaded.sample_inputs),
        "output_features": int(out.shape[1]) if out.ndim == 2 else None,
    }


def inspect_model(path: Path, fmt: str, options: dict, seed: int = 0) -> dict:
    if fmt == "onnx":   # ONNX is never loaded as torch; the graph is its own description
        from compression.formats import onnx_file
        summary = onnx_file.summarise(onnx_file.parse(Path(path)))
        return {"format": fmt, "parameters": summary["parameters"], "inputs": summary["inputs"],
                "outputs": summary["outputs"], "layers_by_type": {}, "modules": [], "modules_complete": False}
    with torch.no_grad():
        return describe_loaded(load_model(Path(path), fmt, options, seed=seed))
