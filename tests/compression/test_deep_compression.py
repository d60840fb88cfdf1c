"""Deep Compression stages: prune, share, binary/ternary/fixed16, huffman; their codecs and recipes."""
from __future__ import annotations

import hashlib

import pytest
import torch
from pydantic import ValidationError

from compression.formats.architectures import build_architecture
from compression.coding.container import read_container, write_container
from compression.coding.encoding import decode, raw
from compression.errors import CompressionError
from compression.job.runner import run_compression_job
from compression.stage import CompressionState
from compression.data.outputs import bitwise_equal
from compression.pipeline import check_pipeline_against_model, check_pipeline_data, parse_pipeline
from compression.registry import RECIPES, run_stage

WEIGHTS = ("fc1.weight", "fc2.weight", "fc3.weight")


@pytest.fixture
def lenet():
    torch.manual_seed(0)
    return build_architecture("lenet-300-100")


def _run(model, stages, calibration=None, seed=0) -> CompressionState:
    spec = parse_pipeline({"stages": stages, "seed": seed})
    state = CompressionState(model, {}, spec.seed, calibration=calibration)
    with torch.no_grad():
        for stage in spec.stages:
            run_stage(stage, state)
    return state


def _container(tmp_path, model, state, name="m.mpz"):
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    encodings = {k: state.encodings.get(k) or raw(v) for k, v in weights.items()}
    path = tmp_path / name
    size = write_container(path, encodings, origin={"format": "safetensors", "architecture": "lenet-300-100"},
                           pipeline={})
    return path, size, weights


def _density(t):
    return float((t != 0).sum()) / t.numel()


@pytest.mark.parametrize("scope", ["per_layer", "global"])
def test_prune_reaches_sparsity(lenet, scope):
    state = _run(lenet, [{"kind": "prune", "sparsity": 0.8, "scope": scope}])
    total = sum(getattr(lenet, n.split(".")[0]).weight.numel() for n in WEIGHTS)
    zeros = sum(int((getattr(lenet, n.split(".")[0]).weight == 0).sum()) for n in WEIGHTS)
    assert abs(zeros / total - 0.8) < 1e-3
    if scope == "per_layer":
        for n in WEIGHTS:
            assert abs(_density(lenet.get_parameter(n)) - 0.2) < 1e-3
    for n in WEIGHTS:
        assert state.encodings[n].codec == "sparse"
        assert torch.equal(state.masks[n], lenet.get_parameter(n) != 0)


def test_prune_layer_overrides_and_gradual(lenet):
    _run(lenet, [{"kind": "prune", "sparsity": 0.9, "steps": 3, "layers": {"fc3": 0.5}}])
    assert abs(_density(lenet.fc1.weight) - 0.1) < 1e-3 and abs(_density(lenet.fc3.weight) - 0.5) < 1e-3


def test_saliency_needs_data_and_uses_it(lenet):
    spec = parse_pipeline({"stages": [{"kind": "prune", "sparsity": 0.5, "criterion": "saliency"}]})
    assert check_pipeline_data(spec, False) and not check_pipeline_data(spec, True)
    with pytest.raises(CompressionError, match="calibration"):
        _run(lenet, [{"kind": "prune", "sparsity": 0.5, "criterion": "saliency"}])
    torch.manual_seed(1)
    batches = [(torch.randn(16, 784), torch.randint(0, 10, (16,))), (torch.randn(16, 784),)]
    state = _run(lenet, [{"kind": "prune", "sparsity": 0.5, "criterion": "saliency"}], calibration=batches)
    assert abs(_density(lenet.fc2.weight) - 0.5) < 1e-3
    assert state.masks["fc1.weight"].sum() == lenet.fc1.weight.numel() // 2


@pytest.mark.parametrize("bits", [1, 3, 5])
def test_share_has_at_most_2_pow_bits_values_and_keeps_zeros(lenet, bits):
    state = _run(lenet, [{"kind": "prune", "sparsity": 0.7}, {"kind": "share", "bits": bits}])
    for n in WEIGHTS:
        w = lenet.get_parameter(n)
        assert w[w != 0].unique().numel() <= 2 ** bits
        assert ((w != 0) <= state.masks[n]).all()          # pruned weights stay zero
        assert state.masks[n].float().mean() == pytest.approx(0.3, abs=1e-3)


def test_share_can_store_biases_in_float16(lenet, tmp_path):
    bias = lenet.fc1.bias.detach().clone()
    state = _run(lenet, [{"kind": "share", "bits": 4, "bias_dtype": "float16", "centroid_dtype": "float16"}])
    assert torch.equal(lenet.fc1.bias.detach(), bias.half().float())
    assert state.encodings["fc1.bias"].parts["values"].storage == "float16"
    decoded, _ = read_container(_container(tmp_path, lenet, state)[0])
    assert torch.equal(decoded["fc1.bias"], lenet.fc1.bias.detach())


def test_binary_is_sign_times_channel_scale(lenet):
    original = lenet.fc1.weight.detach().clone()
    _run(lenet, [{"kind": "quantize", "dtype": "binary"}])
    w = lenet.fc1.weight.detach()
    scale = original.abs().mean(dim=1, keepdim=True)
    assert torch.allclose(w.abs(), scale.expand_as(w))
    assert torch.equal(torch.sign(w), torch.where(original >= 0, 1.0, -1.0))


def test_ternary_values(lenet):
    _run(lenet, [{"kind": "quantize", "dtype": "ternary"}])
    for row in lenet.fc2.weight.detach():
        vals = row.unique()
        s = vals.abs().max()
        assert set(vals.tolist()) <= {-float(s), 0.0, float(s)}
        assert (row == 0).any() and (row != 0).any()


def test_fixed16_on_grid(lenet):
    original = lenet.fc1.weight.detach().clone()
    state = _run(lenet, [{"kind": "quantize", "dtype": "fixed16"}])
    n = state.encodings["fc1.weight"].params["frac_bits"]
    w = lenet.fc1.weight.detach().double() * 2 ** n
    assert torch.equal(w, w.round()) and (w.abs() <= 32768).all()
    assert (lenet.fc1.weight - original).abs().max() <= 2 ** -(n + 1) + 1e-9
    _run(build_architecture("lenet-300-100"), [{"kind": "quantize", "dtype": "fixed16", "frac_bits": 12}])


PIPELINES = [
    [{"kind": "prune", "sparsity": 0.6}],
    [{"kind": "share", "bits": 4}],
    [{"kind": "share", "bits": 3, "centroid_dtype": "float16"}, {"kind": "huffman"}],
    [{"kind": "prune", "sparsity": 0.9}, {"kind": "share", "bits": 5}],
    [{"kind": "prune", "sparsity": 0.9, "scope": "global"}, {"kind": "share", "bits": 2, "init": "random"},
     {"kind": "huffman"}],
    [{"kind": "prune", "sparsity": 0.5}, {"kind": "quantize", "dtype": "int8"}],
    [{"kind": "prune", "sparsity": 0.5}, {"kind": "quantize", "dtype": "int4", "symmetric": False},
     {"kind": "huffman"}],
    [{"kind": "quantize", "dtype": "binary"}],
    [{"kind": "prune", "sparsity": 0.5}, {"kind": "quantize", "dtype": "binary"}, {"kind": "huffman"}],
    [{"kind": "quantize", "dtype": "ternary"}, {"kind": "huffman"}],
    [{"kind": "prune", "sparsity": 0.3}, {"kind": "quantize", "dtype": "ternary"}],
    [{"kind": "quantize", "dtype": "fixed16"}, {"kind": "huffman"}],
    [{"kind": "prune", "sparsity": 0.95}, {"kind": "huffman", "parts": ["gaps"]}],
]


@pytest.mark.parametrize("stages", PIPELINES, ids=lambda s: "+".join(x.get("dtype", x["kind"]) for x in s))
def test_container_round_trip_is_exact(tmp_path, lenet, stages):
    state = _run(lenet, stages)
    path, _, weights = _container(tmp_path, lenet, state)
    decoded, _ = read_container(path)
    for k, v in weights.items():
        assert bitwise_equal(decoded[k], v), k
        assert bitwise_equal(decode(state.encodings.get(k) or raw(v)), v), k


def test_huffman_shrinks_container_and_is_deterministic(tmp_path):
    stages = [{"kind": "prune", "sparsity": 0.9}, {"kind": "share", "bits": 5, "init": "random"}]
    sizes, digests = {}, []
    for label, extra in (("plain", []), ("huffman", [{"kind": "huffman"}]), ("again", [{"kind": "huffman"}])):
        torch.manual_seed(0)
        model = build_architecture("lenet-300-100")
        path, sizes[label], _ = _container(tmp_path, model, _run(model, stages + extra, seed=3), f"{label}.mpz")
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert sizes["huffman"] < sizes["plain"]
    assert digests[1] == digests[2]


@pytest.mark.parametrize("stages, match", [
    ([{"kind": "prune", "sparsity": 1.5}], "sparsity"),
    ([{"kind": "prune", "sparsity": 0.0}], "sparsity"),
    ([{"kind": "share", "bits": 0}], "bits"),
    ([{"kind": "share", "bits": 9}], "bits"),
    ([{"kind": "huffman"}, {"kind": "share", "bits": 4}], "cannot come after"),
    ([{"kind": "share", "bits": 4}, {"kind": "quantize", "dtype": "int8"}], "at most one"),
    ([{"kind": "prune", "sparsity": 0.5, "speed": 1}], "speed"),
    ([{"kind": "quantize", "dtype": "int8", "frac_bits": 3}], "frac_bits"),
])
def test_spec_rejections(stages, match):
    with pytest.raises(ValidationError, match=match):
        parse_pipeline({"stages": stages})


def test_patterns_matching_nothing_are_reported(lenet):
    summary = {"layers_complete": True, "layers": [{"name": n} for n in lenet.state_dict()]}
    for stage in ({"kind": "prune", "sparsity": 0.5, "exclude": ["conv9"]},
                  {"kind": "prune", "sparsity": 0.5, "layers": {"nope": 0.2}},
                  {"kind": "share", "bits": 4, "exclude": ["conv9"]}):
        problems = check_pipeline_against_model(parse_pipeline({"stages": [stage]}), summary)
        assert problems and "matches no layer" in problems[0]
    with pytest.raises(CompressionError, match="matches no layer"):
        _run(lenet, [{"kind": "share", "bits": 4, "exclude": ["conv9"]}])


def test_deep_compression_recipe_through_the_job(tmp_path, lenet_safetensors):
    spec = parse_pipeline({"stages": RECIPES["deep-compression"].stages})
    out = run_compression_job(lenet_safetensors, "safetensors", {"architecture": "lenet-300-100"}, spec, tmp_path)
    m = out.metrics
    assert m["compression_ratio"] > 10 and m["verification"]["model.mpz"]["weights_bitwise_equal"]
    fc1 = next(r for r in m["layers"] if r["name"] == "fc1.weight")
    assert abs(fc1["density"] - 0.2) < 1e-3 and fc1["codebook_size"] == 32 and fc1["bits_per_weight"] < 3
    assert fc1["index_bits_per_weight"] > 0 and "huffman" in fc1["encoding"]
    for name in ("prune-50", "kmeans-4bit", "binary", "ternary", "fixed16"):
        assert RECIPES[name].stages and parse_pipeline({"stages": RECIPES[name].stages})


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_pruned_non_float32_weights_round_trip(tmp_path, dtype):
    torch.manual_seed(0)
    model = build_architecture("lenet-300-100").to(dtype)
    state = _run(model, [{"kind": "prune", "sparsity": 0.5}])
    path, _, weights = _container(tmp_path, model, state)
    decoded, _ = read_container(path)
    assert all(bitwise_equal(decoded[k], v) for k, v in weights.items())


def test_saliency_pruning_through_the_job_with_calibration(tmp_path, lenet_safetensors):
    spec = parse_pipeline({"stages": [{"kind": "prune", "sparsity": 0.6, "criterion": "saliency"},
                                      {"kind": "share", "bits": 4}, {"kind": "huffman"}]})
    torch.manual_seed(3)
    calibration = [(torch.rand(32, 784), torch.randint(0, 10, (32,))) for _ in range(2)]
    with pytest.raises(CompressionError, match="calibration"):
        run_compression_job(lenet_safetensors, "safetensors", {"architecture": "lenet-300-100"}, spec, tmp_path / "a")
    out = run_compression_job(lenet_safetensors, "safetensors", {"architecture": "lenet-300-100"}, spec,
                              tmp_path / "b", calibration=calibration)
    fc2 = next(r for r in out.metrics["layers"] if r["name"] == "fc2.weight")
    assert abs(fc2["density"] - 0.4) < 1e-3 and fc2["codebook_size"] == 16
