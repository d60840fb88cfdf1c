"""Reload every artifact from its bytes on disk and compare with the in-memory compressed model."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from compression.coding.container import (
    ContainerError,
    load_container_module,
    read_container,
)
from compression.data.outputs import bitwise_equal, max_abs_diff, run
from compression.errors import CompressionError


def _tolerance(reference: torch.Tensor) -> float:
    # same weights, possibly different kernels (traced/exported graphs): float32 rounding only
    return 1e-4 * max(1.0, float(reference.abs().max()) if reference.numel() else 1.0)


def check_weights(name: str, loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(loaded))
    extra = sorted(set(loaded) - set(expected))
    wrong = [k for k in expected if k in loaded and not bitwise_equal(loaded[k], expected[k])]
    if missing or extra or wrong:
        raise CompressionError(f"verification of {name} failed: missing {missing[:3]}, unexpected {extra[:3]}, "
                               f"not bitwise equal {wrong[:3]}")


Probe = Callable[[torch.nn.Module, tuple], torch.Tensor]


def check_outputs(name: str, module: torch.nn.Module, inputs: tuple, reference: torch.Tensor,
                  probe: Probe = run) -> float:
    try:
        out = probe(module, inputs)
    except Exception as exc:
        raise CompressionError(f"verification of {name} failed: reloaded model does not run: "
                               f"{type(exc).__name__}: {exc}"[:500]) from None
    diff = max_abs_diff(out, reference)
    if not diff <= _tolerance(reference):
        raise CompressionError(f"verification of {name} failed: outputs differ by {diff:.3g} from the "
                               "compressed model")
    return diff


def verify_container(path: Path, expected: dict[str, torch.Tensor], inputs: tuple, reference: torch.Tensor,
                     program: Path | None, probe: Probe = run) -> dict:
    """Decoded weights must be bitwise what the model holds; the rebuilt module must reproduce its outputs."""
    try:
        state, _ = read_container(path)
        check_weights(path.name, state, expected)
        module = load_container_module(path, program=program)
    except ContainerError as exc:
        raise CompressionError(f"verification of {path.name} failed: {exc}") from None
    return {"weights_bitwise_equal": True,
            "output_max_abs_diff": check_outputs(path.name, module, inputs, reference, probe)}


def verify_safetensors(path: Path, expected: dict[str, torch.Tensor], build: Callable[[], torch.nn.Module] | None,
                       inputs: tuple, reference: torch.Tensor, probe: Probe = run) -> dict:
    state = load_file(str(path))
    check_weights(path.name, state, expected)
    result: dict = {"weights_bitwise_equal": True}
    if build is not None:
        module = build()
        module.load_state_dict(state, strict=True)
        result["output_max_abs_diff"] = check_outputs(path.name, module, inputs, reference, probe)
    return result


def verify_program(path: Path, load: Callable[[Path], torch.nn.Module], inputs: tuple,
                   reference: torch.Tensor, probe: Probe = run) -> dict:
    try:
        module = load(path)
    except Exception as exc:
        raise CompressionError(f"verification of {path.name} failed: it does not load: "
                               f"{type(exc).__name__}: {exc}"[:500]) from None
    return {"output_max_abs_diff": check_outputs(path.name, module, inputs, reference, probe)}


def verify_hf_folder(path: Path, expected: dict[str, torch.Tensor], inputs: tuple, reference: torch.Tensor,
                     probe: Probe) -> dict:
    """The exported folder goes through the same checked loader as an upload (transformers, no remote code)."""
    from compression.formats import ModelFormatError
    from compression.formats.archives import ZIP
    from compression.formats.hf_folder import load_archive

    try:
        module = load_archive(path, ZIP)[0]
    except ModelFormatError as exc:
        raise CompressionError(f"verification of {path.name} failed: it does not load: {exc.message}") from None
    check_weights(path.name, {k: v for k, v in module.state_dict().items() if k in expected}, expected)
    return {"weights_bitwise_equal": True,
            "output_max_abs_diff": check_outputs(path.name, module, inputs, reference, probe)}


def verify_onnx(path: Path, inputs: tuple, reference: torch.Tensor, probe: Probe = run, exact: bool = False) -> dict:
    """The .onnx from its bytes on disk, run by onnxruntime on the same sample inputs (`exact`: without the
    graph fusions that change arithmetic, see onnx_file.session)."""
    from compression.job.export import load_own_onnx

    try:
        module = load_own_onnx(path, exact)
    except Exception as exc:
        raise CompressionError(f"verification of {path.name} failed: onnxruntime cannot load it: "
                               f"{type(exc).__name__}: {exc}"[:500]) from None
    return {"output_max_abs_diff": check_outputs(path.name, module, inputs, reference, probe),
            "runtime": "onnxruntime"}
