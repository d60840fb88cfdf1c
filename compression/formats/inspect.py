"""Inspection of an upload by loading it once (in a worker's sandboxed child, never in the API):
format, parameters, layers by type with shapes, the input signature and the output shape.
Stored with the model so that submit-time checks see what the model really is (e.g. a
convolution-only method on a model without convolutions is a 422, not a failed job)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from compression.formats import ModelFormatError, LoadedModel, load_model
from compression.formats.limits import SUMMARY_LAYER_CAP
from compression.data.outputs import run


def _signature(inputs: tuple) -> list[dict]:
    # the batch dimension is dynamic in every export (ONNX, .pt2); the rest are the sample's
    return [{"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "dynamic_dims": [0]}
            for t in inputs if isinstance(t, torch.Tensor)]


def _used(inputs, origin: str, names: list[str] | None = None, values: dict | None = None) -> list[dict]:
    """What the service feeds the model (shapes after its guesses, where the values come from), so a user
    sees at once what it guessed: the upload summary shows it."""
    out = []
    for i, t in enumerate(inputs):
        if not hasattr(t, "shape"):
            continue
        name = names[i] if names else f"input_{i}"
        row = {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "from": origin}
        if values and name in values:
            row.update({"from": "options.input_values", "value": values[name]})
        out.append(row)
    return out


def _onnx_used(loaded, signature: list[dict], options: dict) -> list[dict]:
    given = set(options.get("input_shapes") or {}) | ({signature[0]["name"]} if options.get("input_shape") else set())
    rows = _used(list(loaded.feeds.values()), "", list(loaded.feeds), options.get("input_values"))
    symbolic = {s["name"]: [j for j, d in enumerate(s["shape"]) if not (isinstance(d, int) and d > 0)]
                for s in signature}
    for row in rows:
        dims = symbolic.get(row["name"], [])
        if row["from"] == "":
            row["from"] = ("random, shape from options.input_shapes" if row["name"] in given else
                           "random, shape of the graph" if not dims else
                           "random, symbolic batch set to 8" if dims == [0] else
                           "random, symbolic dims GUESSED (batch 8, others 1): give options.input_shapes")
    return rows


def _module_type(mod: torch.nn.Module) -> str:
    return getattr(mod, "original_name", None) or type(mod).__name__   # TorchScript keeps the class name


def module_types(model: torch.nn.Module) -> dict[str, str]:
    """Every module holding parameters of its own: name -> class name (what stages' check_module_types take)."""
    return {name: _module_type(mod) for name, mod in model.named_modules()
            if name and next(mod.parameters(recurse=False), None) is not None}


_INPUT_HINTS = {
    "random": 'give the input shape: options {"input_shape": [batch, ...]} (ONNX: {"input_shapes": {name: [...]}}) '
              'or real samples: options {"sample_dataset": "ds_..."}',
    "program": 'the example inputs stored in the program are used; give options {"input_shape": [batch, ...]} or '
               '{"sample_dataset": "ds_..."} for others',
    "dataset": "the sample dataset's first samples are used; check that its tensors are the model's inputs, in order",
    "tokenizer": "sample sentences from the model's own tokenizer are used; check config.json and the tokenizer files",
}


def run_example(loaded: LoadedModel) -> torch.Tensor:
    """The model on its example inputs. A failure here is the upload's, so it is a ModelFormatError that
    says which inputs were used and how to give others, not an internal error."""
    try:
        with torch.no_grad():
            return (loaded.probe or run)(loaded.model, loaded.sample_inputs)
    except MemoryError:
        raise
    except Exception as exc:
        if "can't allocate memory" in str(exc):   # the job's memory limit: the sandbox reports that
            raise
        shapes = ", ".join(f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')}" if isinstance(t, torch.Tensor)
                           else repr(t) for t in loaded.sample_inputs)
        # TorchScript puts its serialized-code traceback first; the reason is the last line
        detail = (str(exc).strip().splitlines() or [""])[-1][:400]
        raise ModelFormatError(f"the model does not run on its example inputs ({shapes}): {type(exc).__name__}: "
                               f"{detail}. {_INPUT_HINTS.get(loaded.inputs_origin, '')}") from None


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
    out = run_example(loaded)
    return {
        "format": loaded.format,
        "architecture": loaded.architecture,
        "hf_model_type": (loaded.hf.config.get("model_type") if loaded.hf else None),
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers_by_type": {k: {"count": by_type[k], "parameters": params_by_type[k]} for k in sorted(by_type)},
        "modules": layers,
        "modules_complete": sum(by_type.values()) <= SUMMARY_LAYER_CAP,
        "inputs": loaded.input_signature or _signature(loaded.sample_inputs),
        "sample_inputs": _used(loaded.sample_inputs, loaded.inputs_origin),
        **({"static_batch": loaded.static_batch} if loaded.static_batch else {}),
        "output_features": int(out.shape[1]) if out.ndim == 2 else None,
    }


def _inspect_onnx(path: Path, options: dict, seed: int) -> tuple[dict, dict]:
    """Loaded as an ONNX job loads it (parse, external data refused, weights finite, sample feeds) and run
    once in onnxruntime. -> (inspection, the header summary the API no longer parses itself)."""
    import numpy as np

    from compression.formats import ModelFormatError, onnx_file
    from compression.formats.options import as_dict

    options = as_dict(options)
    loaded = onnx_file.load(path, options, seed=seed)
    try:
        outs = onnx_file.session(path.read_bytes()).run(None, loaded.feeds)
    except Exception as exc:   # onnxruntime refuses the graph (unknown op, bad shapes, ...)
        raise ModelFormatError(f"onnxruntime cannot run the uploaded model: {type(exc).__name__}: "
                               f"{str(exc)[:500]}{onnx_file.guessed_dims_hint(loaded.proto, options)}") from None
    summary = onnx_file.summarise(loaded.proto)
    by_type: Counter = Counter()
    params_by_type: Counter = Counter()
    held = dict(loaded.holder.named_parameters())
    modules = []
    for t in loaded.targets:
        shape = list(held[t.key].shape)
        by_type[t.module_type] += 1
        params_by_type[t.module_type] += held[t.key].numel()
        if len(modules) < SUMMARY_LAYER_CAP:
            modules.append({"name": t.name, "type": t.module_type, "parameters": held[t.key].numel(),
                            "shapes": {"weight": shape}})
    single = np.asarray(outs[0]) if len(outs) == 1 else None
    inspection = {
        "format": "onnx", "parameters": summary["parameters"],
        "layers_by_type": {k: {"count": by_type[k], "parameters": params_by_type[k]} for k in sorted(by_type)},
        "modules": modules,
        "modules_complete": False,   # weight initializers only, not modules: no module-type checks
        "inputs": summary["inputs"], "outputs": summary["outputs"],
        "sample_inputs": _onnx_used(loaded, summary["inputs"], options),
        "output_features": int(single.shape[1]) if single is not None and single.ndim == 2 else None,
    }
    return inspection, summary


def inspect_upload(path: Path, fmt: str, options, seed: int = 0, sample_inputs=None) -> dict:
    """-> {"inspection": ..., "summary": the upload's full header summary where the API only checked framing
    (ONNX), else None}. `sample_inputs`: the resolved options.sample_dataset file (compression.job.sources)."""
    if fmt == "onnx":   # ONNX is never loaded as torch
        inspection, summary = _inspect_onnx(Path(path), options, seed)
        return {"inspection": inspection, "summary": summary}
    with torch.no_grad():
        loaded = load_model(Path(path), fmt, options, seed=seed, sample_inputs=sample_inputs)
        return {"inspection": describe_loaded(loaded), "summary": None}


def inspect_model(path: Path, fmt: str, options, seed: int = 0) -> dict:
    return inspect_upload(path, fmt, options, seed)["inspection"]
