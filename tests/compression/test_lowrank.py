from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from compression.formats.architectures import build_architecture
from compression.coding.encoding import raw
from compression.errors import CompressionError
from compression.job.runner import run_compression_job
from compression.stage import CompressionState
from compression.methods.lowrank import LowRankSpec, cp_factor, low_rank, plan, svd_factor, tucker_factor
from compression.pipeline import parse_pipeline
from compression.formats.structure import apply_structure


@pytest.fixture(autouse=True)
def one_thread():
    """LAPACK SVD with 2 threads on an oversubscribed 2-core host runs ~100x slower (spin-waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def spec(**kw) -> LowRankSpec:
    return LowRankSpec(kind="low_rank", **kw)


def flops(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_svd_full_rank_reproduces_linear_and_1x1_conv():
    torch.manual_seed(0)
    lin = nn.Linear(20, 12)
    x = torch.randn(5, 20)
    seq = svd_factor(lin, 12)
    assert [type(m) for m in seq] == [nn.Linear, nn.Linear] and seq[0].bias is None
    assert torch.allclose(seq(x), lin(x), atol=1e-5)
    assert not torch.allclose(svd_factor(lin, 3)(x), lin(x), atol=1e-2)   # truncation does change it
    conv = nn.Conv2d(8, 6, 1, stride=2, padding=1)
    xc = torch.randn(2, 8, 7, 7)
    assert torch.allclose(svd_factor(conv, 6)(xc), conv(xc), atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_tucker_full_rank_exact_and_low_rank_cuts_macs(stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, stride=stride, padding=1).double()
    x = torch.randn(2, 16, 12, 12, dtype=torch.float64)
    full = tucker_factor(conv, (24, 16))
    assert [m.kernel_size for m in full] == [(1, 1), (3, 3), (1, 1)]
    assert torch.allclose(full(x), conv(x), atol=1e-10)
    small = tucker_factor(conv, (6, 4))
    assert flops(small, x) < 0.5 * flops(conv, x) and n_params(small) < 0.5 * n_params(conv)


def test_cp_reproduces_exact_rank_kernel_and_cuts_macs():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, padding=1).double()
    a, b, c = (torch.randn(n, 4, dtype=torch.float64) for n in (8, 6, 9))
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("or,ir,kr->oik", a, b, c).reshape(8, 6, 3, 3))
    x = torch.randn(2, 6, 10, 10, dtype=torch.float64)
    seq = cp_factor(conv, 4, iterations=300)
    assert seq[1].groups == 4   # depthwise kxk in the middle
    assert torch.allclose(seq(x), conv(x), atol=1e-5)
    assert flops(seq, x) < 0.5 * flops(conv, x)


class TwoLayers(nn.Module):
    """Same-sized layers with a steep (nearly rank-4) and a flat (random) spectrum."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.steep, self.flat, self.tiny = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 3)
        with torch.no_grad():
            self.steep.weight.copy_(torch.randn(64, 4) @ torch.randn(4, 64) + 0.01 * torch.randn(64, 64))

    def forward(self, x):
        return self.tiny(self.flat(self.steep(x)))


def test_global_energy_gives_ranks_by_spectrum_and_leaves_growing_layers_alone():
    state = CompressionState(TwoLayers())
    layers, ranks = plan(spec(energy=0.8, scope="global"), state)
    assert ranks["steep"][0] <= 5 and ranks["flat"][0] >= 2 * ranks["steep"][0]
    _, per_layer = plan(spec(energy=0.8), state)   # per layer, the flat layer must keep far more
    assert per_layer["flat"][0] > 2 * ranks["flat"][0] and per_layer["steep"][0] <= 5
    by_name = {layer.name: layer for layer in layers}
    kept = sum(float(p[:ranks[n][0]].sum()) for n, layer in by_name.items() for p in layer.spectra)
    assert kept >= 0.8 * 3 - 1e-9
    x = torch.randn(4, 64)
    decisions = {d.name: d for d in low_rank(spec(energy=0.8, scope="global"), state)}
    assert decisions["steep"].factored and isinstance(state.model.steep, nn.Sequential)
    assert not decisions["tiny"].factored and type(state.model.tiny) is nn.Linear   # 3x64: rank>=1 cannot shrink
    assert [e["module"] for e in state.structure] == [n for n, d in decisions.items() if d.factored]
    strict = {d.name: d for d in low_rank(spec(energy=0.8, scope="global", min_saving=0.75),
                                          CompressionState(TwoLayers()))}
    assert strict["steep"].factored and not strict["flat"].factored   # flat: rank 9 x 128 > a quarter of 64 x 64
    rebuilt = apply_structure(TwoLayers(), state.structure)
    rebuilt.load_state_dict(state.model.state_dict(), strict=True)
    assert torch.equal(rebuilt(x), state.model(x))


def test_global_ratio_meets_parameter_budget():
    model = build_architecture("lenet-300-100")
    before = n_params(model)
    seen = []
    state = CompressionState(model, checkpoint=seen.append)
    low_rank(spec(ratio=0.3, scope="global"), state)
    assert seen == sorted(seen) and seen[-1] == 1.0
    weights = sum(p.numel() for n, p in state.model.named_parameters() if n.endswith("weight"))
    assert weights <= 0.3 * (784 * 300 + 300 * 100 + 100 * 10) and n_params(state.model) < before


def test_exclude_types_and_method_override():
    model = build_architecture("small-resnet")
    state = CompressionState(model)
    out = low_rank(spec(ratio=0.5, exclude=["blocks.2.conv1"], methods={"blocks.2.conv2": "cp"},
                        layer_types=["conv"]), state)
    names = {d.name: d for d in out}
    assert "fc" not in names and "blocks.2.conv1" not in names
    assert names["blocks.2.conv2"].method == "cp" and names["blocks.1.conv2"].method == "tucker"
    assert names["blocks.1.shortcut.0"].method == "svd"
    assert state.model.blocks[2].conv2[1].groups > 1


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.mid, self.out = nn.Embedding(50, 32), nn.Linear(32, 32), nn.Linear(32, 50, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids):
        return self.out(self.mid(self.emb(ids)))


def test_tied_output_layer_and_embeddings_are_left_alone():
    state = CompressionState(Tied().eval())
    out = {d.name for d in low_rank(spec(rank=2), state)}
    assert out == {"mid"} and state.model.out.weight is state.model.emb.weight
    assert not state.model.mid.training


def test_refusals():
    with pytest.raises(CompressionError, match="before any stage"):
        low_rank(spec(), CompressionState(build_architecture("lenet-300-100"), {"fc1.weight": raw(torch.zeros(1))}))
    lenet = build_architecture("lenet-300-100")
    program = torch.jit.trace(lenet, torch.randn(2, 1, 28, 28))
    with pytest.raises(CompressionError, match="TorchScript"):
        low_rank(spec(), CompressionState(program))
    with pytest.raises(CompressionError, match="matches no layer"):
        low_rank(spec(exclude=["nope*"]), CompressionState(copy.deepcopy(lenet)))


@pytest.mark.parametrize("bad", [{"energy": 1.5}, {"rank": 0}, {"ratio": 1.0}, {"energy": 0.9, "rank": 4},
                                 {"rank": 4, "scope": "global"}, {"layer_types": []}, {"conv_method": "svd"}])
def test_spec_rejects_nonsense(bad):
    with pytest.raises(ValidationError):
        parse_pipeline({"stages": [{"kind": "low_rank", **bad}]})


def test_spec_defaults_to_energy():
    assert spec().energy == 0.9 and spec(rank=8).energy is None


def test_embeddings_and_hf_linear_names():
    import transformers   # a runtime dependency
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=16)
    torch.manual_seed(0)
    bert = transformers.BertModel(cfg).eval()
    state = CompressionState(bert)
    out = {d.name: d for d in low_rank(spec(rank=4), state)}
    assert "encoder.layer.0.intermediate.dense" in out and out["encoder.layer.0.intermediate.dense"].factored
    assert not any("embeddings" in n for n in out)
    ids = torch.randint(0, 50, (2, 7))
    rebuilt = apply_structure(transformers.BertModel(cfg).eval(), state.structure)
    rebuilt.load_state_dict(state.model.state_dict(), strict=True)
    assert torch.equal(rebuilt(input_ids=ids).last_hidden_state, state.model(input_ids=ids).last_hidden_state)


@pytest.mark.parametrize("arch, stage", [("lenet-300-100", {"energy": 0.8, "scope": "global"}),
                                         ("small-resnet", {"ratio": 0.5, "scope": "global"})])
def test_job_with_low_rank_stage(arch, stage, tmp_path):
    torch.manual_seed(0)
    model = build_architecture(arch)
    path = tmp_path / "in.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    pipeline = parse_pipeline({"stages": [{"kind": "low_rank", **stage}, {"kind": "quantize", "dtype": "fp16"}]})
    out = run_compression_job(path, "safetensors", {"architecture": arch}, pipeline, tmp_path / "out")
    m = out.metrics
    assert m["parameters_after"] < m["parameters_before"]
    # fp16 weights: the compact ONNX holds them as float16 + Cast
    assert set(m["verification"]) == {"model.mpz", "model.safetensors", "model.pt2", "model.onnx", "model.compact.onnx"}
    for name in ("model.mpz", "model.safetensors"):   # rebuilt from the architecture + structure record
        assert m["verification"][name]["weights_bitwise_equal"] is True
    assert all("output_max_abs_diff" in check for check in m["verification"].values())
    assert m["exports"]["onnx"]["ok"]
    assert m["output_mean_cosine"] > 0.5
    decisions = m["stages"][0]["result"]   # what the stage decided, per layer, in the job's metrics
    assert m["stages"][0]["kind"] == "low_rank" and any(d["factored"] for d in decisions)
