"""Dense artifacts of the compressed model: safetensors weights and runnable programs."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file


def write_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    # clones: safetensors refuses tensors that share storage (tied weights)
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path), metadata=metadata)


def write_torchscript(model: torch.nn.Module, sample_inputs: tuple, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch.jit is deprecated but still the upload's own format
        program = model if isinstance(model, torch.jit.ScriptModule) else torch.jit.trace(model, sample_inputs)
        torch.jit.save(program, str(path))


def write_pt2(model: torch.nn.Module, sample_inputs: tuple, path: Path) -> None:
    torch.export.save(torch.export.export(model, tuple(sample_inputs)), str(path))


def load_own_torchscript(path: Path) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu")


def load_own_pt2(path: Path) -> torch.nn.Module:
    """Only for files this job wrote itself (uploads go through formats.load_program)."""
    return torch.export.load(str(path)).module()
