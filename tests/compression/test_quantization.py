from __future__ import annotations

import pytest
import torch

from compression.formats.architectures import build_architecture
from compression.coding.encoding import decode
from compression.errors import CompressionError
from compression.stage import CompressionState
from compression.pipeline import parse_pipeline
from compression.registry import run_stage


def _quantize(model, **spec) -> CompressionState:
    stage = parse_pipeline({"stages": [{"kind": "quantize", **spec}]}).stages[0]
    state = CompressionState(model)
    run_stage(stage, state)
    return state


@pytest.fixture
def lenet():
    torch.manual_seed(0)
    return build_architecture("lenet-300-100")


@pytest.mark.parametrize("dtype, bits", [("int8", 8), ("int4", 4)])
@pytest.mark.parametrize("symmetric", [True, False])
def test_int_per_channel_has_at_most_2_pow_bits_values_per_channel(lenet, dtype, bits, symmetric):
    original = lenet.fc1.weight.detach().clone()
    state = _quantize(lenet, dtype=dtype, symmetric=symmetric)
    w = lenet.fc1.weight.detach()
    for row in w:
        assert row.unique().numel() <= 2 ** bits
    assert w.unique().numel() > 2 ** bits            # but scales differ between channels
    # error bounded by half a quantization step per channel
    step = (original.abs().amax(1, keepdim=True) / (2 ** (bits - 1) - 1)) if symmetric else \
        ((original.amax(1, keepdim=True).clamp(min=0) - original.amin(1, keepdim=True).clamp(max=0)) / (2 ** bits - 1))
    assert ((w - original).abs() <= step / 2 + 1e-6).all()
    assert torch.equal(decode(state.encodings["fc1.weight"]), w)
    assert set(state.encodings) == {"fc1.weight", "fc2.weight", "fc3.weight"}   # biases stay float32
    assert state.encodings["fc1.weight"].parts["codes"].storage == ({8: "int8", 4: "int4"}[bits] if symmetric
                                                                   else {8: "uint8", 4: "uint4"}[bits])


def test_int_per_tensor_uses_one_scale(lenet):
    state = _quantize(lenet, dtype="int4", granularity="per_tensor")
    assert lenet.fc2.weight.unique().numel() <= 16
    assert state.encodings["fc2.weight"].parts["scales"].numel == 1


def test_fp16_round_trip(lenet):
    original = lenet.fc1.weight.detach().clone()
    state = _quantize(lenet, dtype="fp16")
    assert torch.equal(lenet.fc1.weight, original.half().float())
    enc = state.encodings["fc1.weight"]
    assert enc.codec == "cast" and enc.parts["values"].storage == "float16" and enc.bits_per_element() == 16


def test_bf16_keeps_large_values_fp16_refuses_them(lenet):
    with torch.no_grad():
        lenet.fc3.weight[0, 0] = 1e6
    with pytest.raises(CompressionError, match="range"):
        _quantize(lenet, dtype="fp16")
    _quantize(lenet, dtype="bf16")
    assert lenet.fc3.weight[0, 0] == torch.tensor(1e6).bfloat16().float()


def test_zero_channel_and_nonfinite(lenet):
    with torch.no_grad():
        lenet.fc2.weight[3] = 0
    _quantize(lenet, dtype="int8")
    assert (lenet.fc2.weight[3] == 0).all() and torch.isfinite(lenet.fc2.weight).all()
    with torch.no_grad():
        lenet.fc1.weight[0, 0] = float("nan")
    with pytest.raises(CompressionError, match="NaN"):
        _quantize(lenet, dtype="int8")


def test_exclude_patterns(lenet):
    original = lenet.fc3.weight.detach().clone()
    state = _quantize(lenet, dtype="int8", exclude=["fc3"])
    assert "fc3.weight" not in state.encodings and torch.equal(lenet.fc3.weight, original)
    with pytest.raises(CompressionError, match="matches no layer"):
        _quantize(build_architecture("lenet-300-100"), dtype="int8", exclude=["conv*"])


def test_embeddings_and_convs():
    model = torch.nn.ModuleDict({"emb": torch.nn.Embedding(20, 8), "conv": torch.nn.Conv2d(3, 4, 3),
                                 "norm": torch.nn.LayerNorm(8)})
    state = _quantize(model, dtype="int8", include_embeddings=False)
    assert set(state.encodings) == {"conv.weight"}
    state = _quantize(model, dtype="int8")
    assert set(state.encodings) == {"conv.weight", "emb.weight"}
    assert state.encodings["conv.weight"].parts["scales"].numel == 4   # per output channel


def test_small_resnet_quantizes_convs_not_batchnorm():
    model = build_architecture("small-resnet")
    state = _quantize(model, dtype="int8")
    assert all(".bn" not in n and not n.startswith("stem.1") for n in state.encodings)
    assert "stem.0.weight" in state.encodings and "fc.weight" in state.encodings
