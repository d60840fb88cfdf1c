from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from compression.formats.architectures import build_architecture


@pytest.fixture(scope="session")
def lenet_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_architecture("lenet-300-100")


@pytest.fixture(scope="session")
def lenet_safetensors(tmp_path_factory, lenet_model) -> Path:
    path = tmp_path_factory.mktemp("models") / "lenet.safetensors"
    save_file({k: v.contiguous() for k, v in lenet_model.state_dict().items()}, str(path))
    return path


class TinyNet(torch.nn.Module):
    """Small program for TorchScript / torch.export uploads (fast to trace and export)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


@pytest.fixture(scope="session")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return TinyNet().eval()


@pytest.fixture(scope="session")
def torchscript_file(tmp_path_factory, tiny_model) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    torch.jit.save(torch.jit.script(tiny_model), str(path))
    return path


@pytest.fixture(scope="session")
def pt2_file(tmp_path_factory, tiny_model) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.pt2"
    torch.export.save(torch.export.export(tiny_model, (torch.randn(2, 3, 6, 6),)), str(path))
    return path
