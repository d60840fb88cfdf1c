"""Built-in architectures: bare weights (safetensors, state dicts) name one of these."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class LeNet300100(nn.Module):
    """The MNIST MLP 784-300-100-10 of LeCun et al. (and of Deep Compression)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 inputs (first conv padded, as usual for MNIST)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A small ResNet: 3x3 stem, one basic block per width, global average pool."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(cin, w, stride=1 if i == 0 else 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class SeparableBlock(nn.Module):
    """MobileNet v1's unit: depthwise 3x3 + BatchNorm + ReLU6, then pointwise 1x1 + BatchNorm + ReLU6."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self.bn1(self.depthwise(x)))
        return nn.functional.relu6(self.bn2(self.pointwise(x)))


class MobileNetMini(nn.Module):
    """A MobileNet-v1-style net for small images: 3x3 stem, depthwise-separable blocks, global average pool."""

    BLOCKS = ((32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1))

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())
        self.blocks = nn.Sequential(*(SeparableBlock(cin, cout, s) for cin, cout, s in self.BLOCKS))
        self.fc = nn.Linear(self.BLOCKS[-1][1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]      # one example, without the batch dimension


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("lenet-300-100", "MNIST MLP 784-300-100-10", LeNet300100, (1, 28, 28)),
    Architecture("lenet-5", "LeNet-5 convolutional net for 1x28x28 inputs", LeNet5, (1, 28, 28)),
    Architecture("small-resnet", "3 residual basic blocks (16/32/64 channels) with BatchNorm, 1x28x28 inputs",
                 SmallResNet, (1, 28, 28)),
    Architecture("mobilenet-mini", "MobileNet-v1-style: 3x3 stem, 5 depthwise-separable blocks (32-256 channels) "
                 "with BatchNorm, 1x28x28 inputs", MobileNetMini, (1, 28, 28)),
)}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None


def build_architecture(name: str, device: str | torch.device | None = None) -> nn.Module:
    """A fresh model in eval mode; device="meta" gives names and shapes without allocating."""
    arch = get_architecture(name)
    with torch.device(device or "cpu"):
        return arch.build().eval()


def expected_tensors(name: str) -> dict[str, tuple[tuple[int, ...], bool]]:
    """state_dict name -> (shape, is_parameter), computed on the meta device."""
    model = build_architecture(name, "meta")
    params = {n for n, _ in model.named_parameters()}
    return {n: (tuple(t.shape), n in params) for n, t in model.state_dict().items()}
