"""Fine-tuning keeps what earlier stages fixed (masks, quantizer grids, codebook indices), resumes
from its checkpoint, and evaluation reports correct metrics."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load as st_load

from compression.data.tensor_data import JobData, TensorData
from compression.coding.encoding import decode
from compression.data.evaluation import compare, evaluate
from compression.stage import CompressionState
from compression.pipeline import parse_pipeline
from compression.registry import run_stage

torch.set_num_threads(1)


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()


def _data(n: int = 256, seed: int = 0) -> JobData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, :4].argmax(1)).to(torch.int64)   # learnable rule
    return JobData(train=TensorData((x,), y), eval=TensorData((x[:64],), y[:64]))


def _state(model, data, **hooks) -> CompressionState:
    state = CompressionState(model, data=data, teacher=copy.deepcopy(model), example_inputs=((data.train or data.eval).inputs[0][:2],))
    for k, v in hooks.items():
        setattr(state, k, v)
    return state


def _run(state, *stages):
    for stage in parse_pipeline({"stages": list(stages)}).stages:
        with torch.enable_grad() if stage.trains else torch.no_grad():
            run_stage(stage, state)


def _ce(model, data) -> float:
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(data.train.inputs[0]), data.train.labels))


def test_evaluation_metrics_on_a_hand_made_case():
    out = torch.tensor([[3.0, 1, 0, 0, 0, 0], [0, 2, 1, 0, 0, 0], [0.5, -1, 0.4, 0.3, 0.2, 5]], dtype=torch.float64)
    ref = torch.tensor([[3.0, 1, 0, 0, 0, 0], [0, 1, 2, 0, 0, 0], [0.5, -1, 0.4, 0.3, 0.2, 5]], dtype=torch.float64)
    m = compare(out, ref, torch.tensor([0, 2, 1]), classifier=True)
    assert m["top1"] == pytest.approx(1 / 3)          # only row 0 has its label ranked first
    assert m["top5"] == pytest.approx(2 / 3)          # row 2's label (1) ranks last: not in its top 5
    assert m["agreement"] == pytest.approx(2 / 3)
    assert m["cosine"] == pytest.approx((1 + 0.8 + 1) / 3, abs=1e-6)
    assert m["mse"] == pytest.approx(2 / 18)
    assert m["score"] == m["top1"]
    unlabelled = compare(out, ref, None, classifier=False)
    assert "top1" not in unlabelled and "agreement" not in unlabelled and unlabelled["score"] == unlabelled["cosine"]


def test_evaluate_runs_models_batched():
    model, data = _mlp(), _data()
    m = evaluate(model, copy.deepcopy(model), data.eval, None, batch_size=7)
    assert m["samples"] == 64 and m["agreement"] == 1.0 and m["cosine"] == pytest.approx(1.0) and m["mse"] == 0.0


def test_finetune_after_pruning_keeps_zeros_and_recovers():
    data = _data()
    state = _state(_mlp(), data)
    _run(state, {"kind": "prune", "sparsity": 0.7})
    zeros = {n: (p == 0) for n, p in state.model.named_parameters() if n in state.masks}
    before = _ce(state.model, data)
    _run(state, {"kind": "finetune", "epochs": 5, "lr": 0.01, "patience": None})
    assert _ce(state.model, data) < before - 0.05
    for n, p in state.model.named_parameters():
        if n in zeros:
            assert torch.all(p[zeros[n]] == 0)
            assert torch.equal(decode(state.encodings[n]), p.detach())   # the container holds the trained values


@pytest.mark.parametrize("stage,levels", [({"kind": "quantize", "dtype": "int4"}, 16),
                                          ({"kind": "quantize", "dtype": "binary"}, 2),
                                          ({"kind": "share", "bits": 3}, 8)])
def test_quantization_aware_finetune_reencodes(stage, levels):
    data = _data()
    state = _state(_mlp(), data)
    _run(state, stage)
    old = {n: e for n, e in state.encodings.items()}
    before = _ce(state.model, data)
    _run(state, {"kind": "finetune", "epochs": 4, "lr": 0.01, "patience": None})
    assert _ce(state.model, data) < before
    for name, enc in state.encodings.items():
        assert enc.codec == old[name].codec and enc.params == old[name].params
        w = dict(state.model.named_parameters())[name].detach()
        assert torch.equal(decode(enc), w)
        assert max(len(torch.unique(row)) for row in w.reshape(w.shape[0], -1)) <= levels
    changed = [n for n in old if not torch.equal(decode(old[n]), decode(state.encodings[n]))]
    assert changed   # training moved the quantized weights


def test_centroid_finetune_of_a_pruned_shared_layer_keeps_zeros_and_codebook_size():
    """Deep Compression's retraining: after prune + share only the centroids train (Han et al. 2016, 3.1)."""
    data = _data()
    state = _state(_mlp(), data)
    _run(state, {"kind": "prune", "sparsity": 0.8}, {"kind": "share", "bits": 3})
    masks = {n: m.clone() for n, m in state.masks.items()}
    before = {n: p.detach().clone() for n, p in state.model.named_parameters() if n in masks}
    loss = _ce(state.model, data)
    _run(state, {"kind": "finetune", "epochs": 4, "lr": 0.01, "patience": None})
    assert _ce(state.model, data) < loss
    for n, p in state.model.named_parameters():
        if n in masks:
            w = p.detach()
            assert ((w != 0) <= masks[n]).all() and w[w != 0].unique().numel() <= 8
            assert not torch.equal(w, before[n]) and torch.equal(decode(state.encodings[n]), w)


def test_unlabelled_finetune_matches_the_teacher():
    data = _data()
    data.train.labels = data.eval.labels = None
    state = _state(_mlp(), data)
    _run(state, {"kind": "prune", "sparsity": 0.8})
    teacher = state.teacher
    x = data.train.inputs[0]
    err = lambda: float(torch.nn.functional.mse_loss(state.model(x), teacher(x)))  # noqa: E731
    with torch.no_grad():
        before = err()
        _run(state, {"kind": "finetune", "epochs": 5, "lr": 0.01})
        assert err() < before * 0.7


def test_resume_continues_from_the_checkpoint():
    data = _data()
    saved, logs = {}, []
    spec = {"kind": "finetune", "epochs": 3, "lr": 0.01, "patience": None}
    straight = _state(_mlp(), data)
    _run(straight, {**spec})

    first = _state(_mlp(), data, save_checkpoint=lambda n, b: saved.__setitem__(n, b))
    _run(first, {**spec, "epochs": 1})   # "crashes" after epoch 1
    payload = saved["finetune"]
    assert st_load(payload)["meta/epoch"].item() == 1   # a safetensors payload, no pickle

    resumed = _state(_mlp(), data, load_checkpoint=lambda n: payload, log=logs.append)
    _run(resumed, spec)
    assert [r["epoch"] for r in logs] == [2, 3]
    for (n, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=n)


def test_finetune_without_training_data_fails():
    from compression.errors import CompressionError
    state = _state(_mlp(), JobData(eval=_data().eval))
    with pytest.raises(CompressionError, match="training data"):
        _run(state, {"kind": "finetune"})
