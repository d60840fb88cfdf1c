"""The Deep Compression line through the service's own job runner (`run_compression_job`, what a
worker runs for `POST /v1/jobs`): the trained LeNet and the MNIST subset go in as uploaded files
(safetensors weights, .npz train/eval datasets) and the retraining happens in `finetune` stages.
Sizes are the container bytes the job reports; accuracy is the job's own eval metrics.

    python bench/deep_compression_service.py [lenet-300-100] [lenet-5]

Same data, baselines and per-layer settings as bench/deep_compression_lenet.py (which drives the
library directly); the pipeline is what a user would submit (printed as JSON).

Measured 2026-11-29 (torch 2.13 CPU, 2 threads; accuracy = the job's eval top-1 on the 1000 test digits):
  lenet-300-100  1,066,896 B -> 18,921 B container  56.4x  92.3 % -> 91.9 % (drop 0.4)   job 23 s
  lenet-5          247,560 B ->  6,174 B container  40.1x  95.3 % -> 95.7 % (+0.4)       job  9 s
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.deep_compression_lenet import CONFIGS, SEED, load_mnist  # noqa: E402
from compression.formats.architectures import build_architecture  # noqa: E402
from compression.job.runner import run_compression_job  # noqa: E402
from compression.pipeline import parse_pipeline  # noqa: E402
from compression.training.masked import accuracy, train  # noqa: E402


def stages(cfg: dict) -> list[dict]:
    out = []
    for frac, lr in zip(cfg["prune_rounds"], (5e-4, 5e-4, 5e-4, 1e-4)):   # gradual pruning with retraining
        out.append({"kind": "prune", "sparsity": 0.9, "layers": {k: round(v * frac, 4) for k, v in cfg["sparsity"].items()}})
        out.append({"kind": "finetune", "epochs": cfg["retrain_epochs"] if frac < 1 else cfg["final_epochs"],
                    "lr": lr, "patience": None})
    out.append({"kind": "share", "bits": 8, "layers": cfg["bits"], "centroid_dtype": "float16", "bias_dtype": "float16"})
    out.append({"kind": "finetune", "epochs": cfg["centroid_epochs"], "lr": 2e-4, "patience": None})   # centroids
    out.append({"kind": "huffman"})
    return out


def run(arch: str, cfg: dict, data, workdir: Path) -> dict:
    (Xtr, ytr), (Xte, yte) = data
    if cfg["image"]:
        Xtr, Xte = Xtr.reshape(-1, 1, 28, 28), Xte.reshape(-1, 1, 28, 28)
    torch.manual_seed(SEED)
    model = build_architecture(arch)
    train(model, Xtr, ytr, epochs=cfg["train_epochs"], lr=1e-3, seed=SEED)
    dense = workdir / f"{arch}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(dense))
    np.savez(workdir / "train.npz", inputs=Xtr.numpy(), labels=ytr.numpy())
    np.savez(workdir / "eval.npz", inputs=Xte.numpy(), labels=yte.numpy())
    pipeline = {"stages": stages(cfg), "seed": SEED}
    t0 = time.perf_counter()
    out = run_compression_job(dense, "safetensors", {"architecture": arch},
                              parse_pipeline(pipeline), workdir / f"out-{arch}",
                              dataset_files={"train": (workdir / "train.npz", "npz"),
                                             "eval": (workdir / "eval.npz", "npz")},
                              measure_latency=False)
    m = out.metrics
    return dict(arch=arch, pipeline=pipeline, dense=m["size_bytes_before"], container=m["size_bytes_after"],
                acc_before=accuracy(model, Xte, yte), job_before=m["evaluation"][0]["top1"],
                job_after=m["evaluation"][-1]["top1"], seconds=time.perf_counter() - t0)


def main() -> None:
    torch.set_num_threads(2)
    data = load_mnist()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch, cfg in CONFIGS.items():
            if sys.argv[1:] and arch not in sys.argv[1:]:
                continue
            results.append(run(arch, cfg, data, Path(tmp)))
    print("\nDeep Compression through the job runner (finetune stages on uploaded .npz data), CPU, 2 threads\n")
    print(f"{'model':<14}{'fp32 bytes':>11}{'container':>11}{'ratio':>8}{'acc before':>12}{'after':>8}{'drop':>7}{'job s':>7}")
    for r in results:
        print(f"{r['arch']:<14}{r['dense']:>11}{r['container']:>11}{r['dense'] / r['container']:>7.1f}x"
              f"{100 * r['job_before']:>11.1f}%{100 * r['job_after']:>7.1f}%"
              f"{100 * (r['job_before'] - r['job_after']):>6.1f}p{r['seconds']:>7.0f}")
    for r in results:
        print(f"\n{r['arch']} pipeline (POST /v1/jobs with data.train / data.eval):\n{json.dumps(r['pipeline'])}")


if __name__ == "__main__":
    main()
