"""Linear maps described by far fewer numbers than m*n (Cheng et al. 2015; CirCNN; Sindhwani et al. 2015).

BlockCirculantLinear: W is a grid of b x b circulant blocks, each defined by its first column, so a
layer stores ceil(m/b) * ceil(n/b) * b numbers instead of m*n; the product runs as an FFT (a circular
convolution per block) for large blocks and as a dense matmul of the expanded matrix for small ones or
inside exporters. A plain circulant layer is one block (b = max(m, n)).
ToeplitzLinear: W[i, j] = v[i - j + n - 1], m + n - 1 numbers; the product is a 1-D convolution.

Both keep their defining numbers in a parameter called `weight`, so quantization, pruning and sharing
stages treat them as they treat any other weight. `conv1x1=True` applies the map to dim 1 of NCHW
tensors (a 1x1 convolution). Hand-written: no maintained library ships these as torch layers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FFT_MIN_BLOCK = 64   # below this the dense product of the expanded matrix is faster on CPU (measured)


def _exporting() -> bool:
    return torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def circulant_index(b: int, device=None) -> torch.Tensor:
    """[b, b] index of a circulant block: C[i, j] = c[(i - j) mod b]."""
    i = torch.arange(b, device=device)
    return (i[:, None] - i[None, :]) % b


class _ChannelMap(nn.Module):
    """Shared by the structured layers: bias, and the 1x1-convolution form (maps dim 1 of NCHW)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, conv1x1: bool):
        super().__init__()
        self.in_features, self.out_features, self.conv1x1 = in_features, out_features, conv1x1
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv1x1:
            return self._map(x.movedim(1, -1)).movedim(-1, 1)
        return self._map(x)

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dense_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}" \
               + (", conv1x1=True" if self.conv1x1 else "")


class BlockCirculantLinear(_ChannelMap):
    def __init__(self, in_features: int, out_features: int, block_size: int, bias: bool = True,
                 conv1x1: bool = False):
        if block_size < 1 or in_features < 1 or out_features < 1:
            raise ValueError("sizes must be positive")
        super().__init__(in_features, out_features, bias, conv1x1)
        self.block_size = block_size
        rows, cols = math.ceil(out_features / block_size), math.ceil(in_features / block_size)
        self.weight = nn.Parameter(torch.empty(rows, cols, block_size))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(in_features))

    def dense_weight(self) -> torch.Tensor:
        rows, cols, b = self.weight.shape
        blocks = self.weight[:, :, circulant_index(b, self.weight.device)]          # [rows, cols, b, b]
        return blocks.permute(0, 2, 1, 3).reshape(rows * b, cols * b)[:self.out_features, :self.in_features]

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        if self.block_size < FFT_MIN_BLOCK or _exporting():
            return F.linear(x, self.dense_weight(), self.bias)
        rows, cols, b = self.weight.shape
        lead = x.shape[:-1]
        x = F.pad(x, (0, cols * b - self.in_features)).reshape(-1, cols, b)
        # block (r, c) times x_c is the circular convolution c_rc * x_c: a product of spectra
        spectrum = torch.einsum("rcf,ncf->nrf", torch.fft.rfft(self.weight, dim=-1), torch.fft.rfft(x, dim=-1))
        y = torch.fft.irfft(spectrum, n=b, dim=-1).reshape(*lead, rows * b)[..., :self.out_features]
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", block_size={self.block_size}"


class ToeplitzLinear(_ChannelMap):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, conv1x1: bool = False):
        super().__init__(in_features, out_features, bias, conv1x1)
        self.weight = nn.Parameter(torch.empty(out_features + in_features - 1))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(in_features))

    def dense_weight(self) -> torch.Tensor:
        i = torch.arange(self.out_features, device=self.weight.device)
        j = torch.arange(self.in_features, device=self.weight.device)
        return self.weight[i[:, None] - j[None, :] + self.in_features - 1]

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        # y_i = sum_j v[i - j + n - 1] x_j: the "full" convolution of x with v, read at n - 1 .. n + m - 2,
        # which conv1d (a cross-correlation) computes with v reversed
        lead, n, m = x.shape[:-1], self.in_features, self.out_features
        y = F.conv1d(x.reshape(-1, 1, n), self.weight.flip(0).reshape(1, 1, -1), padding=m - 1)
        y = y[:, 0, :m].reshape(*lead, m)
        return y + self.bias if self.bias is not None else y


# ---- projections: the structured matrix nearest (least squares) to a trained dense W [m, n] ----

def project_block_circulant(w: torch.Tensor, block_size: int) -> torch.Tensor:
    """[rows, cols, b] first columns: each block's circulant diagonals averaged over the entries W has
    (padding beyond W's edge is not averaged in)."""
    m, n, b = w.shape[0], w.shape[1], block_size
    rows, cols = math.ceil(m / b), math.ceil(n / b)
    padded = torch.zeros(rows * b, cols * b, dtype=torch.float64)
    present = torch.zeros_like(padded)
    padded[:m, :n], present[:m, :n] = w.double(), 1.0
    blocks = padded.reshape(rows, b, cols, b).permute(0, 2, 1, 3)      # [rows, cols, b, b]
    have = present.reshape(rows, b, cols, b).permute(0, 2, 1, 3)
    idx = circulant_index(b).reshape(-1)
    sums = torch.zeros(rows, cols, b, dtype=torch.float64).index_add_(2, idx, blocks.reshape(rows, cols, -1))
    counts = torch.zeros(rows, cols, b, dtype=torch.float64).index_add_(2, idx, have.reshape(rows, cols, -1))
    return (sums / counts.clamp(min=1)).to(w.dtype)


def project_toeplitz(w: torch.Tensor) -> torch.Tensor:
    """[m + n - 1]: the mean of each diagonal (v[k] for i - j = k - n + 1)."""
    m, n = w.shape
    i, j = torch.arange(m)[:, None], torch.arange(n)[None, :]
    idx = (i - j + n - 1).reshape(-1)
    sums = torch.zeros(m + n - 1, dtype=torch.float64).index_add_(0, idx, w.double().reshape(-1))
    counts = torch.zeros(m + n - 1, dtype=torch.float64).index_add_(0, idx, torch.ones(m * n, dtype=torch.float64))
    return (sums / counts).to(w.dtype)
