from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from compression.formats.architectures import build_architecture
from compression.errors import CompressionError, JobCancelled
from compression.job.runner import run_compression_job
from compression.stage import CompressionState
from compression.methods.structured import StructuredPruneSpec, structured_prune
from compression.pipeline import parse_pipeline
from compression.formats.structure import apply_structure


def spec(**kw) -> StructuredPruneSpec:
    return StructuredPruneSpec(kind="structured_prune", **kw)


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def prune(model, inputs, s, **kw) -> CompressionState:
    state = CompressionState(model, example_inputs=inputs, **kw)
    with torch.no_grad():   # as in a job: the stage must enable autograd itself for tracing
        state.result = structured_prune(s, state)
    return state


def rebuilt(build, state):
    fresh = apply_structure(build(), state.structure)
    fresh.load_state_dict(state.model.state_dict(), strict=True)
    return fresh


def tiny_bert():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32)
    return lambda: BertModel(cfg).eval()


def bert_inputs():
    ids = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return ids, mask


def hidden(model, inputs):
    with torch.no_grad():
        return model(input_ids=inputs[0], attention_mask=inputs[1]).last_hidden_state


def test_small_resnet_half_channels_is_smaller_dense_and_rebuilds():
    torch.manual_seed(0)
    model = build_architecture("small-resnet")
    x = torch.randn(2, 1, 28, 28)
    before = params(model)
    progress = []
    state = CompressionState(model, example_inputs=(x,), checkpoint=progress.append)
    with torch.no_grad():
        result = structured_prune(spec(ratio=0.5), state)
    m = state.model
    assert result.params_after == params(m) < 0.35 * before and result.params_before == before
    assert progress == sorted(progress) and progress[-1] == 1.0
    # residual: the block output, its shortcut and the next block's input agree
    b1, b2 = m.blocks[1], m.blocks[2]
    assert b1.conv2.out_channels == b1.bn2.num_features == b1.shortcut[0].out_channels == b2.conv1.in_channels
    assert m.stem[0].out_channels == m.stem[1].num_features == m.blocks[0].conv1.in_channels == 8
    assert m.fc.out_features == 10 and m.fc.in_features == 32   # the classifier's outputs are kept
    assert all(not p.is_sparse for p in m.parameters())
    out = m(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert torch.equal(rebuilt(lambda: build_architecture("small-resnet"), state)(x), out)


def test_exclude_protects_a_layer_and_its_coupled_group():
    torch.manual_seed(0)
    model = build_architecture("small-resnet")
    state = prune(model, (torch.randn(2, 1, 28, 28),), spec(ratio=0.5, exclude=["blocks.1.conv1"]))
    assert state.model.blocks[1].conv1.out_channels == 32        # excluded
    assert state.model.blocks[2].conv1.out_channels == 32        # not excluded: halved
    # the stem feeds a residual add with block 0: excluding block 0's conv2 keeps them all
    state = prune(build_architecture("small-resnet"), (torch.randn(2, 1, 28, 28),),
                  spec(ratio=0.5, exclude=["blocks.0.conv2"]))
    assert state.model.stem[0].out_channels == state.model.blocks[0].conv2.out_channels == 16


def test_bert_heads_and_ffn_pruned_and_rebuilt_exactly():
    build, inputs = tiny_bert(), bert_inputs()
    torch.manual_seed(0)
    model = build()
    before = params(model)
    state = prune(model, inputs, spec(ratio=0.5, heads_ratio=0.5))
    m = state.model
    assert params(m) < before
    for layer in m.encoder.layer:
        sa = layer.attention.self
        assert sa.num_attention_heads == 2 and sa.all_head_size == 16 and sa.attention_head_size == 8
        assert sa.query.out_features == sa.key.out_features == sa.value.out_features == 16
        assert layer.attention.output.dense.in_features == 16 and layer.attention.output.dense.out_features == 32
        assert layer.intermediate.dense.out_features == layer.output.dense.in_features == 32
    assert state.result.heads == {f"encoder.layer.{i}.attention.self": 2 for i in range(2)}
    assert [e["op"] for e in state.structure].count("set_attrs") == 2
    out = hidden(m, inputs)
    assert out.shape == (3, 9, 32) and torch.isfinite(out).all()
    assert torch.equal(hidden(rebuilt(build, state), inputs), out)


def test_zeroed_channels_are_the_ones_removed_and_outputs_do_not_change():
    torch.manual_seed(0)
    model = build_architecture("lenet-300-100")
    dead = torch.arange(0, 300, 2)
    with torch.no_grad():
        model.fc1.weight[dead] = 0
        model.fc1.bias[dead] = 0
    x = torch.randn(5, 1, 28, 28)
    reference = model(x)
    alive = model.fc1.weight[1::2].clone()
    state = prune(model, (x,), spec(ratio=0.0, layers={"fc1": 0.5}))
    assert state.model.fc1.out_features == 150 and state.model.fc2.out_features == 100
    assert torch.equal(state.model.fc1.weight, alive)
    assert torch.allclose(state.model(x), reference, atol=1e-6)


def test_zeroed_heads_are_removed_and_bert_outputs_do_not_change():
    build, inputs = tiny_bert(), bert_inputs()
    torch.manual_seed(0)
    model = build()
    with torch.no_grad():   # heads 1 and 3 of every layer contribute nothing
        for layer in model.encoder.layer:
            sa = layer.attention.self
            for head in (1, 3):
                rows = slice(8 * head, 8 * head + 8)
                for lin in (sa.query, sa.key, sa.value):
                    lin.weight[rows] = 0
                    lin.bias[rows] = 0
                layer.attention.output.dense.weight[:, rows] = 0
    reference = hidden(model, inputs)
    q = model.encoder.layer[0].attention.self.query.weight
    kept_q = torch.cat([q[0:8], q[16:24]]).clone()
    state = prune(model, inputs, spec(ratio=0.0, heads_ratio=0.5))
    assert state.model.encoder.layer[0].intermediate.dense.out_features == 64   # FFN untouched at ratio 0
    assert torch.equal(state.model.encoder.layer[0].attention.self.query.weight, kept_q)
    assert torch.allclose(hidden(state.model, inputs), reference, atol=1e-5)


def test_taylor_uses_calibration_data():
    torch.manual_seed(0)
    model = build_architecture("lenet-5")
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    s = spec(importance="taylor", ratio=0.5)
    assert s.needs_data and not spec().needs_data
    with pytest.raises(CompressionError, match="calibration"):
        prune(model, (x[:2],), s)
    model.conv1.weight.requires_grad_(False)   # e.g. frozen by the owner: traced anyway, left frozen
    state = prune(model, (x[:2],), s, calibration=[(x, y)])
    assert state.model.conv2.out_channels == 8 and state.model.fc3.out_features == 10
    assert all(p.grad is None for p in state.model.parameters())
    assert [n for n, p in state.model.named_parameters() if not p.requires_grad] == ["conv1.weight"]


def test_cancellation_is_not_reported_as_a_failure():
    def cancel(fraction):
        if fraction > 0.5:
            raise JobCancelled()

    state = CompressionState(build_architecture("lenet-5"), example_inputs=(torch.randn(2, 1, 28, 28),),
                             checkpoint=cancel)
    with pytest.raises(JobCancelled):
        structured_prune(spec(), state)


def test_refusals():
    with pytest.raises(ValidationError):
        spec(ratio=1.5)
    with pytest.raises(ValidationError):
        spec(heads_ratio=-0.1)
    names = list(build_architecture("lenet-5", "meta").state_dict())
    assert spec(exclude=["nothing*"]).check_against(names) == [
        "exclude pattern 'nothing*' matches no layer of the model"]
    assert spec(exclude=["fc1"], layers={"conv*": 0.3}).check_against(names) == []
    x = (torch.randn(2, 1, 28, 28),)
    with pytest.raises(CompressionError, match="matches no layer"):
        prune(build_architecture("lenet-5"), x, spec(exclude=["nothing*"]))
    with pytest.raises(CompressionError, match="BERT-like"):
        prune(build_architecture("lenet-5"), x, spec(heads_ratio=0.5))
    with pytest.raises(CompressionError, match="batch-norm"):
        prune(build_architecture("lenet-5"), x, spec(importance="bn_scale"))
    state = CompressionState(build_architecture("lenet-5"), example_inputs=x)
    state.encodings["fc1.weight"] = object()
    with pytest.raises(CompressionError, match="before any stage"):
        structured_prune(spec(), state)
    scripted = torch.jit.script(build_architecture("lenet-5"))
    with pytest.raises(CompressionError, match="TorchScript"):
        prune(scripted, x, spec())


def test_lenet5_job_with_structured_prune_verifies_every_artifact(tmp_path):
    torch.manual_seed(0)
    model = build_architecture("lenet-5")
    path = tmp_path / "lenet5.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    pipeline = parse_pipeline({"stages": [{"kind": "structured_prune", "ratio": 0.5},
                                          {"kind": "quantize", "dtype": "int8"}]})
    out = run_compression_job(path, "safetensors", {"architecture": "lenet-5"}, pipeline, tmp_path / "out")
    m = out.metrics
    assert m["parameters_after"] < 0.5 * m["parameters_before"]
    assert {"model.mpz", "model.safetensors", "model.pt2"} <= set(m["verification"])
    assert m["verification"]["model.safetensors"]["output_max_abs_diff"] == 0.0
    assert m["verification"]["model.mpz"]["weights_bitwise_equal"] is True
    assert {a.kind for a in out.artifacts} >= {"container", "safetensors", "torch-export", "report"}


def test_bert_folder_job_with_heads_pruned_verifies_every_artifact(tmp_path):
    import json
    import zipfile

    config = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 50, "hidden_size": 32,
              "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
              "max_position_embeddings": 32}
    torch.manual_seed(0)
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_bert()().state_dict().items()}, str(weights))
    path = tmp_path / "bert.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tiny/config.json", json.dumps(config))
        zf.write(weights, "tiny/model.safetensors")
    pipeline = parse_pipeline({"stages": [{"kind": "structured_prune", "ratio": 0.5, "heads_ratio": 0.5}]})
    out = run_compression_job(path, "hf-folder", {}, pipeline, tmp_path / "out")
    m = out.metrics
    assert m["parameters_after"] < m["parameters_before"]
    assert {"model.mpz", "model.safetensors", "model.pt2"} <= set(m["verification"])
    assert m["verification"]["model.safetensors"]["output_max_abs_diff"] == 0.0
