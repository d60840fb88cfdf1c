import torch
from torch import nn

from compression.job.metrics import count_macs, latency, tile_inputs


def test_count_macs_linear_and_conv():
    lin = nn.Linear(10, 7)
    assert count_macs(lin, (torch.randn(3, 10),)) == 3 * 10 * 7
    conv = nn.Conv2d(2, 4, 3, padding=1)
    assert count_macs(conv, (torch.randn(1, 2, 5, 5),)) == 4 * 2 * 9 * 25


def test_count_macs_custom_call_uses_keywords():
    lin = nn.Linear(4, 2)
    macs = count_macs(lin, (torch.randn(5, 4),), call=lambda m, x: m(input=x[0]))
    assert macs == 5 * 4 * 2


def test_tile_inputs_repeats_rows_and_keeps_non_tensors():
    ids = torch.tensor([[1, 2], [3, 4], [5, 6]])
    tiled = tile_inputs((ids, 7), 8)
    assert tiled[0].shape == (8, 2) and tiled[1] == 7
    assert torch.equal(tiled[0][3], ids[0]) and torch.equal(tiled[0][7], ids[1])
    assert tile_inputs((ids,), 2)[0].shape == (2, 2)


def test_latency_reports_every_model_and_batch_size_and_restores_threads():
    before = torch.get_num_threads()
    seen = []
    models = {"original": nn.Linear(8, 8), "compressed": nn.Linear(8, 8)}
    out = latency(models, (torch.randn(1, 8),), batch_sizes=(1, 4), threads=1, budget_s=0.01,
                  call=lambda m, x: seen.append(x[0].shape[0]) or m(*x), gpu=False)
    assert torch.get_num_threads() == before
    assert out["threads"] == 1 and "cuda" not in out
    assert set(out["cpu"]) == {"batch_1", "batch_4"}
    for per_batch in out["cpu"].values():
        assert set(per_batch) == {"original", "compressed"}
        assert all(v["repeats"] >= 3 and v["median_ms"] > 0 for v in per_batch.values())
    assert set(seen) == {1, 4}


def test_latency_times_each_model_with_its_caches_warm(monkeypatch):
    """A model's call right after another model's is slow (its caches were evicted), later ones fast, as a
    served model runs; the clock is simulated so the test is exact: every median is the warm time."""
    from compression.job import metrics

    clock = {"now": 0.0, "last": None}
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: clock["now"])

    def call(model, inputs):
        clock["now"] += 0.004 if clock["last"] is not model else 0.001   # cold after another model, else warm
        clock["last"] = model

    models = {"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)}
    out = latency(models, (torch.randn(1, 2),), batch_sizes=(1,), threads=1, budget_s=0.2, call=call, gpu=False)
    assert {name: t["median_ms"] for name, t in out["cpu"]["batch_1"].items()} == {"a": 1.0, "b": 1.0}
    assert all(t["repeats"] >= 50 for t in out["cpu"]["batch_1"].values())   # alternating blocks until the budget


def test_job_metrics_skips_gracefully(monkeypatch):
    from compression.job.metrics import job_metrics

    monkeypatch.setenv("MODELPRESS_LATENCY_BUDGET_S", "0.01")
    small, big = nn.Linear(4, 2), nn.Linear(4, 8)
    out, notes = job_metrics(small, big, (torch.randn(2, 4),))
    assert out["macs_before"] == 16 and out["macs_after"] == 64 and not notes
    assert set(out["latency"]["cpu"]) == {"batch_1", "batch_32"}

    def broken(m, x):
        raise RuntimeError("no")
    out, notes = job_metrics(small, big, (torch.randn(2, 4),), call=broken)
    assert out == {} and len(notes) == 4
    monkeypatch.setenv("MODELPRESS_LATENCY_BUDGET_S", "0")
    out, notes = job_metrics(small, big, (torch.randn(2, 4),))
    assert "latency" not in out and notes == ["latency: not measured (turned off)"]
