"""Group-wise affine quantization and GPTQ: exact container round trip, code counts, error vs RTN, spec checks."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from compression.coding.container import read_container, write_container
from compression.coding.encoding import decode, raw
from compression.errors import CompressionError
from compression.stage import CompressionState
from compression.methods.gptq import gptq_codes
from compression.methods.groupwise import affine_node, dequant, round_to_nearest
from compression.data.outputs import bitwise_equal
from compression.pipeline import check_pipeline_data, parse_pipeline
from compression.registry import RECIPES, run_stage


class Stack(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 40)
        self.fc1 = torch.nn.Linear(40, 72)
        self.fc2 = torch.nn.Linear(72, 24)

    def forward(self, ids):
        return self.fc2(torch.relu(self.fc1(self.emb(ids))))


def _run(model, stages, calibration=None):
    spec = parse_pipeline({"stages": stages})
    state = CompressionState(model, {}, 0, calibration=calibration)
    with torch.no_grad():
        for stage in spec.stages:
            run_stage(stage, state)
    return state


@pytest.mark.parametrize("stages", [
    [{"kind": "quantize", "dtype": "int4", "group_size": 16}],
    [{"kind": "quantize", "dtype": "int4", "group_size": 32, "symmetric": False}, {"kind": "huffman"}],
    [{"kind": "quantize", "dtype": "int3", "group_size": 7, "layers": {"fc2": "int8"}}, {"kind": "huffman"}],
    [{"kind": "quantize", "dtype": "int8", "group_size": 64, "scale_dtype": "float32"}],
    [{"kind": "prune", "sparsity": 0.5}, {"kind": "quantize", "dtype": "int4", "group_size": 8}],
    [{"kind": "gptq", "bits": 3, "group_size": 16}, {"kind": "huffman"}],
    [{"kind": "gptq", "bits": 4, "group_size": None, "symmetric": True, "sequential": True}],
    [{"kind": "gptq", "bits": 4, "group_size": 16, "act_order": False, "clip_search": False}],
    [{"kind": "gptq", "bits": 4, "group_size": 16, "embedding_bits": 2, "embedding_hot_bits": 6}, {"kind": "huffman"}],
])
def test_round_trip_exact_and_codes_per_group(tmp_path, stages):
    torch.manual_seed(0)
    model = Stack()
    calibration = [(torch.randint(0, 50, (16, 5)),) for _ in range(2)]
    state = _run(model, stages, calibration)
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    encodings = {k: state.encodings.get(k) or raw(v) for k, v in weights.items()}
    write_container(tmp_path / "m.mpz", encodings, origin={"format": "state_dict"}, pipeline={})
    decoded, _ = read_container(tmp_path / "m.mpz")
    for k, v in weights.items():
        assert bitwise_equal(decoded[k], v), k
    enc = state.encodings["fc1.weight"]
    values = decode(enc) if enc.codec == "affine" else weights["fc1.weight"]
    gs = (enc.params.get("group_size") if enc.codec == "affine" else 8) or values.shape[1]
    bits = enc.params.get("bits", 4) if enc.codec == "affine" else 4
    for row in values.reshape(values.shape[0], -1):
        for g in row.split(gs):
            assert g.unique().numel() <= 2 ** bits + 1   # +1: a pruned zero


def test_group_layout_with_short_last_group():
    w = torch.randn(3, 10)
    enc = round_to_nearest(w, "float32", 4, False, 4, "float16")
    assert enc.parts["scales"].numel == 9 and enc.params["group_size"] == 4
    assert (decode(enc) - w).abs().max() < 0.3


def test_gptq_beats_round_to_nearest_on_calibration_outputs():
    torch.manual_seed(0)
    w = torch.randn(64, 128)
    mix = torch.randn(128, 128) * 0.3 + torch.eye(128)
    x = torch.randn(2048, 128) @ mix   # correlated inputs: where error compensation pays
    h = 2 * x.T.double() @ x.double() / x.shape[0]
    codes, scales, zeros = gptq_codes(w, h, 3, False, 32, "float16", 0.01, 32)
    gq = decode(affine_node((64, 128), "float32", codes, scales, zeros, 3, False, 32, "float16"))
    rtn = decode(round_to_nearest(w, "float32", 3, False, 32, "float16"))
    err = lambda q: float(((x @ (q - w).T) ** 2).mean())   # noqa: E731
    assert err(gq) < 0.8 * err(rtn)
    for act_order, clip in ((True, False), (False, True), (True, True)):   # each variant still compensates
        codes, scales, zeros = gptq_codes(w, h, 3, False, 32, "float16", 0.01, 32, act_order, clip)
        assert err(decode(affine_node((64, 128), "float32", codes, scales, zeros, 3, False, 32, "float16"))) \
            < 0.8 * err(rtn)
    assert dequant is not None


def test_embedding_rows_the_calibration_looks_up_get_the_hot_bits():
    torch.manual_seed(0)
    model = Stack()
    original = model.emb.weight.detach().clone()
    seen = torch.tensor([1, 4, 9, 16, 25])
    state = _run(model, [{"kind": "gptq", "bits": 4, "group_size": 8, "embedding_bits": 2, "embedding_hot_bits": 8}],
                 [(seen.repeat(4, 1),)])
    enc = state.encodings["emb.weight"]
    assert enc.codec == "rows" and decode(enc.parts["selected"]).sum() == len(seen)
    err = (model.emb.weight.detach() - original).abs().amax(dim=1)
    cold = torch.ones(50, dtype=torch.bool)
    cold[seen] = False
    assert err[seen].max() < 0.2 * err[cold].min()   # 8-bit rows against 2-bit rows


def test_rows_codec_rejects_inconsistent_parts():
    from compression.coding.encoding import Encoded, Part
    a = round_to_nearest(torch.randn(2, 4), "float32", 4, False, None, "float32")
    bad = Encoded("rows", (3, 4), "float32", {}, {"selected": Part(torch.tensor([1, 0, 0], dtype=torch.uint8), "uint8"),
                                                   "a": a, "b": raw(torch.zeros(8))})
    with pytest.raises(ValueError, match="sizes"):
        decode(bad)


@pytest.mark.parametrize("stage, match", [
    ({"kind": "quantize", "dtype": "int4", "group_size": 0}, "group_size"),
    ({"kind": "quantize", "dtype": "fp16", "group_size": 64}, "int3 only"),
    ({"kind": "quantize", "dtype": "int4", "group_size": 64, "granularity": "per_tensor"}, "group_size"),
    ({"kind": "gptq", "group_size": 0}, "group_size"),
    ({"kind": "gptq", "bits": 9}, "bits"),
])
def test_spec_rejections(stage, match):
    with pytest.raises(ValidationError, match=match):
        parse_pipeline({"stages": [stage]})


def test_gptq_needs_calibration():
    spec = parse_pipeline({"stages": [{"kind": "gptq"}, {"kind": "huffman"}]})
    assert "needs calibration data" in check_pipeline_data(spec, False)[0]
    assert check_pipeline_data(spec, True) == []
    with pytest.raises(CompressionError, match="calibration"):
        _run(Stack(), [{"kind": "gptq"}])


def test_preset_runs_on_a_model_whose_dims_it_does_not_divide():
    torch.manual_seed(0)
    state = _run(Stack(), RECIPES["int4-g64-huffman"].stages)   # fc1 has 40 inputs, fc2 72
    assert state.encodings["fc2.weight"].params["group_size"] == 64


def test_bit_allocation_widens_the_sensitive_layer_within_the_budget():
    from compression.methods.bit_allocation import allocate
    errors = {"big_robust": {3: 1.0, 4: 0.5, 5: 0.25}, "small_sensitive": {3: 100.0, 4: 20.0, 5: 4.0}}
    sizes = {"big_robust": 1000, "small_sensitive": 100}
    chosen = allocate(errors, sizes, 3.2)   # 220 spare bits: only the small layer fits, twice
    assert chosen == {"big_robust": 3, "small_sensitive": 5}
    assert sum(sizes[n] * b for n, b in chosen.items()) <= 3.2 * 1100


def test_bit_allocation_can_skip_a_width_for_a_steep_curve():
    from compression.methods.bit_allocation import allocate
    errors = {"a": {3: 1.0, 4: 0.9, 5: 0.0}, "b": {3: 0.2, 4: 0.0, 5: 0.0}}
    assert allocate(errors, {"a": 100, "b": 100}, 4.0) == {"a": 5, "b": 3}


def test_gptq_bits_per_weight_stays_within_the_budget():
    torch.manual_seed(0)
    model = Stack()
    calibration = [(torch.randint(0, 50, (16, 5)),) for _ in range(2)]
    state = _run(model, [{"kind": "gptq", "bits_per_weight": 4.0, "allocation_bits": [3, 4, 5, 6],
                          "group_size": 8, "include_embeddings": False}], calibration)
    bits = {n: state.encodings[n].params["bits"] for n in ("fc1.weight", "fc2.weight")}
    sizes = {"fc1.weight": 72 * 40, "fc2.weight": 24 * 72}
    assert set(bits.values()) <= {3, 4, 5, 6}
    assert sum(sizes[n] * b for n, b in bits.items()) <= 4.0 * sum(sizes.values())
