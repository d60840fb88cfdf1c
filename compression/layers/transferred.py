"""Transferred convolutional filters (the survey's "transferred/compact filters"; CReLU's negation
pairs, Cohen & Welling's flips and rotations): a layer's O filters are fixed transforms of a bank of
fewer base filters, so its unique filter parameters shrink by the number of transforms. Which base and
which transform each output channel uses is a small integer buffer, chosen when the layer is fitted.
The bank is called `weight` so value stages (quantize, share) encode it like any conv weight.
Hand-written: no maintained library offers this as a layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# name -> (transform, its inverse) on [..., kh, kw] filters
TRANSFORMS = {
    "identity": (lambda w: w, lambda w: w),
    "negate": (lambda w: -w, lambda w: -w),
    "hflip": (lambda w: w.flip(-1), lambda w: w.flip(-1)),
    "vflip": (lambda w: w.flip(-2), lambda w: w.flip(-2)),
    "rot90": (lambda w: w.rot90(1, (-2, -1)), lambda w: w.rot90(-1, (-2, -1))),
    "rot180": (lambda w: w.rot90(2, (-2, -1)), lambda w: w.rot90(2, (-2, -1))),
    "rot270": (lambda w: w.rot90(-1, (-2, -1)), lambda w: w.rot90(1, (-2, -1))),
}
SQUARE_ONLY = frozenset({"rot90", "rot270"})


class TransferredConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, bases: int, transforms: list[str],
                 stride=1, padding=0, dilation=1, bias: bool = True):
        super().__init__()
        kernel_size = tuple(kernel_size) if isinstance(kernel_size, (list, tuple)) else (kernel_size, kernel_size)
        unknown = [t for t in transforms if t not in TRANSFORMS]
        if unknown or not transforms or transforms[0] != "identity" or len(set(transforms)) != len(transforms):
            raise ValueError(f"transforms must start with identity and name each of {sorted(TRANSFORMS)} "
                             f"at most once (got {transforms})")
        if SQUARE_ONLY & set(transforms) and kernel_size[0] != kernel_size[1]:
            raise ValueError("90-degree rotations need square kernels")
        if not 1 <= bases <= out_channels:
            raise ValueError("bases must be between 1 and out_channels")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.transforms, self.bases = list(transforms), bases
        self.weight = nn.Parameter(torch.empty(bases, in_channels, *kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # output channel o = transforms[which_transform[o]](weight[which_base[o]])
        self.register_buffer("which_base", torch.arange(out_channels) % bases)
        self.register_buffer("which_transform", torch.zeros(out_channels, dtype=torch.int64))

    def filters(self) -> torch.Tensor:
        bank = torch.stack([TRANSFORMS[t][0](self.weight) for t in self.transforms])   # [T, bases, in, kh, kw]
        return bank[self.which_transform, self.which_base]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.filters(), self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"bases={self.weight.shape[0]}, transforms={self.transforms}, stride={self.stride}")


def fit_transferred(w: torch.Tensor, bases: int, transforms: list[str], iterations: int = 20,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Transform-invariant k-means of the filters w [O, I, kh, kw]: each filter picks the (base,
    transform) nearest to it; each base becomes the mean of its filters mapped back by the inverse
    transforms. Returns (bank [bases, I, kh, kw], which_base [O], which_transform [O])."""
    flat = w.double()
    gen = torch.Generator().manual_seed(seed)
    # start from the filters of largest norm, spread by a random draw weighted by norm (k-means++-like)
    norms = flat.flatten(1).norm(dim=1)
    bank = flat[torch.multinomial(norms + 1e-12, bases, replacement=False, generator=gen)].clone()
    which_base = which_t = None
    for _ in range(iterations):
        candidates = torch.stack([TRANSFORMS[t][0](bank) for t in transforms])           # [T, B, I, kh, kw]
        dist = torch.cdist(flat.flatten(1), candidates.flatten(2).flatten(0, 1))        # [O, T*B]
        best = dist.argmin(dim=1)
        new_t, new_b = best // bases, best % bases
        if which_base is not None and torch.equal(new_b, which_base) and torch.equal(new_t, which_t):
            break
        which_base, which_t = new_b, new_t
        for b in range(bases):
            members = (which_base == b).nonzero().flatten()
            if len(members):
                bank[b] = torch.stack([TRANSFORMS[transforms[int(which_t[o])]][1](flat[o]) for o in members]).mean(0)
            else:   # an empty base takes the filter worst served so far
                worst = dist.gather(1, best[:, None]).flatten().argmax()
                bank[b] = flat[worst]
    return bank.to(w.dtype), which_base, which_t
