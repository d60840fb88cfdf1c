"""Distillation: derived students (narrower CNN/MLP, fewer transformer layers) trained on the
teacher's outputs, rebuilt from the structure record, and the stage inside a whole job."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file

from compression.formats.architectures import build_architecture
from compression.data.tensor_data import JobData, TensorData
from compression.job.runner import run_compression_job
from compression.stage import CompressionState
from compression.pipeline import parse_pipeline
from compression.registry import METHODS
from compression.formats.structure import apply_structure
from compression.training.students import derive_student, spread

torch.set_num_threads(1)


def _run(state, stage: dict):
    spec = parse_pipeline({"stages": [stage]}).stages[0]
    with torch.enable_grad():
        return METHODS[spec.kind].run(spec, state)   # the stage's own result (run_stage drops it)


def _mlp_state(x: torch.Tensor) -> CompressionState:
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                  torch.nn.Linear(64, 5)).eval()
    return CompressionState(copy.deepcopy(teacher), data=JobData(train=TensorData((x,))), teacher=teacher,
                            example_inputs=(x[:2],))


def test_spread_keeps_evenly_spaced_layers_ending_at_the_last():
    assert spread(6, 3) == [1, 3, 5] and spread(12, 4) == [2, 5, 8, 11] and spread(4, 4) == [0, 1, 2, 3]


def test_distillation_lowers_the_students_loss_on_unlabelled_data():
    x = torch.randn(512, 8, generator=torch.Generator().manual_seed(1))
    derived = _mlp_state(x)
    with torch.no_grad():
        derive_student(derived, False, None, None, 0.25)
        before = float(torch.nn.functional.mse_loss(derived.model(x), derived.teacher(x)))
    state = _mlp_state(x)
    result = _run(state, {"kind": "distill", "width": 0.25, "epochs": 5, "lr": 0.01})
    with torch.no_grad():
        after = float(torch.nn.functional.mse_loss(state.model(x), state.teacher(x)))
    assert result["loss"] == "mse" and result["parameters_after"] < result["parameters_before"] / 4
    assert after < before * 0.5
    # the structure record rebuilds the student from the teacher's architecture
    rebuilt = apply_structure(copy.deepcopy(state.teacher), state.structure)
    rebuilt.load_state_dict(state.model.state_dict(), strict=True)
    torch.testing.assert_close(rebuilt(x), state.model(x))


def test_transformer_student_keeps_every_other_layer():
    import transformers   # a runtime dependency
    from compression.formats.hf_folder import sentence_embeddings
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16)
    torch.manual_seed(0)
    teacher = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    ids = torch.randint(1, 50, (64, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    data = JobData(train=TensorData((ids, mask)), eval=TensorData((ids[:16], mask[:16])))
    state = CompressionState(copy.deepcopy(teacher), data=data, teacher=teacher, probe=sentence_embeddings,
                             example_inputs=(ids[:2], mask[:2]))
    logs = []
    state.log = logs.append
    result = _run(state, {"kind": "distill", "layers": 2, "epochs": 2, "lr": 1e-3, "hint_weight": 1.0})
    assert result["student"]["kept"] == [1, 3] and len(state.model.encoder.layer) == 2
    assert state.model.encoder.layer[0].intermediate.dense.out_features == 32   # width defaults to 1 here
    assert result["loss"] == "cosine" and [r["epoch"] for r in logs] == [1, 2] and "cosine" in logs[-1]["eval"]
    rebuilt = apply_structure(transformers.BertModel(cfg, add_pooling_layer=False).eval(), state.structure)
    rebuilt.load_state_dict(state.model.state_dict(), strict=True)
    torch.testing.assert_close(sentence_embeddings(rebuilt, (ids, mask)), sentence_embeddings(state.model, (ids, mask)))


def test_distill_stage_in_a_lenet5_job_reports_evaluation(tmp_path):
    torch.manual_seed(0)
    model = build_architecture("lenet-5")
    path = tmp_path / "lenet5.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 1, 28, 28, generator=g), torch.randint(0, 10, (128,), generator=g)
    data = JobData(train=TensorData((x,), y), eval=TensorData((x[:32],), y[:32]))
    pipeline = parse_pipeline({"stages": [{"kind": "distill", "width": 0.5, "epochs": 1},
                                          {"kind": "quantize", "dtype": "int8"},
                                          {"kind": "finetune", "epochs": 1}]})
    out = run_compression_job(path, "safetensors", {"architecture": "lenet-5"}, pipeline, tmp_path / "out",
                              data=data)
    m = out.metrics
    assert [e["after_stage"] for e in m["evaluation"]] == [None, 0, 1, 2]
    assert m["evaluation"][0]["agreement"] == 1.0 and m["evaluation"][0]["cosine"] == pytest.approx(1.0)
    assert all({"top1", "top5", "cosine", "mse"} <= set(e) for e in m["evaluation"])
    assert m["parameters_after"] < m["parameters_before"] / 3
    assert load_file(str(tmp_path / "out" / "model.safetensors"))["conv2.weight"].shape[0] == 8


def _tiny_bert_state():
    import transformers   # a runtime dependency
    from compression.formats.hf_folder import sentence_embeddings
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16)
    torch.manual_seed(0)
    teacher = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    ids = torch.randint(1, 50, (64, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[::2, 7:] = 0
    data = JobData(train=TensorData((ids, mask)), eval=TensorData((ids[:16], mask[:16])))
    return CompressionState(copy.deepcopy(teacher), data=data, teacher=teacher, probe=sentence_embeddings,
                            example_inputs=(ids[:2], mask[:2])), (ids, mask)


def test_token_loss_and_frozen_embeddings_train_only_the_kept_layers():
    state, (ids, mask) = _tiny_bert_state()
    teacher_embeddings = {k: v.clone() for k, v in state.teacher.embeddings.state_dict().items()}
    before = state.teacher.encoder.layer[3].output.dense.weight.clone()
    result = _run(state, {"kind": "distill", "layer_indices": [0, 3], "epochs": 2, "lr": 1e-3,
                          "token_weight": 1.0, "hint_weight": 0.5, "freeze_embeddings": True})
    assert result["student"]["kept"] == [0, 3]
    for k, v in state.model.embeddings.state_dict().items():   # the embedding block stays the teacher's
        torch.testing.assert_close(v, teacher_embeddings[k])
    assert not torch.equal(state.model.encoder.layer[1].output.dense.weight, before)   # the layers trained
    assert all(p.requires_grad for p in state.model.parameters())   # flags restored after training


def test_max_seconds_stops_training_early():
    state, _ = _tiny_bert_state()
    logs = []
    state.log = logs.append
    result = _run(state, {"kind": "distill", "layers": 2, "epochs": 50, "batch_size": 4, "max_seconds": 1e-6})
    assert result["epochs"] == 1 and result["steps"] == 1 and len(logs) == 1   # one step, then the epoch's eval


def _params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("stage", [
    {"layer_indices": [0, 3], "hint_weight": 0.5, "token_weight": 1.0},   # stored hidden states too
    {"layers": 2},                                                       # pooled embeddings only
])
def test_precomputed_teacher_targets_train_the_same_student_as_the_live_teacher(stage):
    runs = []
    for precompute in (False, True):
        state, _ = _tiny_bert_state()
        state.data.train = state.data.train.take(slice(0, 40))   # batches of 16, 16 and 8
        result = _run(state, {"kind": "distill", "epochs": 2, "lr": 1e-3, "batch_size": 16,
                              "precompute_targets": precompute, **stage})
        runs.append((result, _params(state.model)))
        assert len(state.data.train.inputs) == 2   # the index column is gone again
    (live, live_w), (cached, cached_w) = runs
    assert live["precompute_seconds"] is None and cached["precompute_seconds"] >= 0
    assert cached["steps"] == live["steps"] == 6
    for k in live_w:
        torch.testing.assert_close(cached_w[k], live_w[k], atol=1e-4, rtol=1e-4)


def test_precomputed_targets_for_a_labelled_mlp_match_the_live_teacher():
    x = torch.randn(96, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 5, (96,), generator=torch.Generator().manual_seed(2))
    runs = []
    for precompute in (False, True):
        state = _mlp_state(x)
        state.data.train = TensorData((x,), y)
        result = _run(state, {"kind": "distill", "width": 0.5, "epochs": 2, "lr": 0.01,
                              "precompute_targets": precompute})
        runs.append(_params(state.model))
    assert result["loss"] == "kl"
    for k in runs[0]:
        torch.testing.assert_close(runs[1][k], runs[0][k])


def test_precomputed_hidden_states_over_the_memory_limit_are_refused(monkeypatch):
    from compression.errors import CompressionError
    from compression.methods import distill
    monkeypatch.setattr(distill, "CACHE_LIMIT", 1000)
    state, _ = _tiny_bert_state()
    with pytest.raises(CompressionError, match="hint_weight and token_weight to 0"):
        _run(state, {"kind": "distill", "layers": 2, "hint_weight": 1.0, "precompute_targets": True})
