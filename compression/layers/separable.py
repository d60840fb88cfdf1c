"""Depthwise-separable convolution of rank r (the survey's compact filters, MobileNet's form): a k x k
convolution as r depthwise k x k convolutions (one filter per input channel each), each followed by its own
pointwise 1 x 1, summed: y = sum_r P_r(D_r(x)).

The same function as one depthwise conv with r filters per channel followed by one pointwise conv, but written
as r plain depthwise convs: runtimes run those with their fast depthwise kernels, while a channel multiplier
falls off them (onnxruntime, small-resnet, batch 32: rank 2 as a channel multiplier ran at 0.6x the
dense model's speed, this form at 1.3x; bench/separable_forms.py). Hand-written: torch has no such layer.
"""
from __future__ import annotations

import torch
from torch import nn


class SeparableConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, rank: int = 1, stride=1, padding=0,
                 dilation=1, bias: bool = True):
        super().__init__()
        if not 1 <= rank <= 64:
            raise ValueError("rank must be between 1 and 64")
        self.in_channels, self.out_channels, self.rank = in_channels, out_channels, rank
        self.depthwise = nn.ModuleList(nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
                                                 groups=in_channels, bias=False) for _ in range(rank))
        # one bias for the sum: the first pointwise carries it
        self.pointwise = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 1, bias=bias and r == 0)
                                       for r in range(rank))
        first = self.depthwise[0]
        self.kernel_size, self.stride, self.padding, self.dilation = \
            first.kernel_size, first.stride, first.padding, first.dilation

    @property
    def bias(self) -> torch.Tensor | None:
        return self.pointwise[0].bias

    def dense_weight(self) -> torch.Tensor:
        """The k x k filters this layer computes: W[o, i] = sum_r P_r[o, i] D_r[i]."""
        return sum(p.weight[:, :, 0, 0, None, None] * d.weight[:, 0][None]
                   for d, p in zip(self.depthwise, self.pointwise))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pointwise[0](self.depthwise[0](x))
        for depthwise, pointwise in zip(self.depthwise[1:], self.pointwise[1:]):
            out = out + pointwise(depthwise(x))
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, rank={self.rank}, "
                f"stride={self.stride}")
