"""Jobs on ONNX uploads: ONNX in, ONNX out, compressed in place on the graph's weight initializers.

run_compression_job dispatches here for format "onnx". Weight-only stages run on a holder module
(formats.onnx_file); outputs are measured and every artifact verified with onnxruntime.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compression.coding.container import ContainerError, read_container, write_container
from compression.coding.encoding import raw
from compression.data.outputs import max_abs_diff, mean_cosine
from compression.errors import CompressionError
from compression.formats import ModelFormatError, onnx_file
from compression.job.compact_onnx import write_compact_onnx
from compression.job.int8_runtime import int8_runtime_artifacts
from compression.job.quality import outputs_quality
from compression.job.report import layer_report
from compression.job.stages import (
    COMPACT_ONNX_NAME,
    CONTAINER_NAME,
    DONE,
    EXPORT,
    LOAD,
    ONNX_NAME,
    VERIFY,
    ArtifactFile,
    JobOutput,
    Run,
    compress,
    sha256_file,
)
from compression.job.verify import check_outputs
from compression.stage import CompressionState


def _check(name: str, model_bytes: bytes, feeds: dict, reference: torch.Tensor) -> float:
    # The same check as for torch artifacts, with onnxruntime as the probe.
    return check_outputs(name, model_bytes, feeds, reference, probe=onnx_file.run_bytes)


def _int8_program(pipeline, dense: Path, out_dir: Path, feeds: dict, reference: torch.Tensor):
    """The int8 stage's model.int8.onnx, quantized by onnxruntime from the in-place compressed graph (its
    weights already sit on the int8 grid), run on the sample inputs beside the original's outputs."""
    def probe(runner, inputs):   # every output, as the reference was taken
        return onnx_file.run_session(runner.session, {n: t.numpy() for n, t in zip(runner.names, inputs)})

    inputs = tuple(torch.from_numpy(feeds[name]) for name in feeds)   # graph input order, as the session's
    return int8_runtime_artifacts(pipeline.stages, dense, out_dir, None, inputs, reference, probe)


@dataclass
class _OnnxJob:
    """What the phases of one ONNX job hand each other."""
    loaded: onnx_file.OnnxModel
    pipeline: object
    out_dir: Path
    progress: Run
    reference: torch.Tensor
    encodings_by_name: dict = field(default_factory=dict)   # only what stages encoded, by initializer name
    artifacts: list[ArtifactFile] = field(default_factory=list)
    checks: dict = field(default_factory=dict)
    exports: dict = field(default_factory=dict)


def run_onnx_job(model_path: Path, options, pipeline, out_dir: Path, progress: Run) -> JobOutput:
    job = _load(model_path, options, pipeline, out_dir, progress)
    state = compress(pipeline, CompressionState(job.loaded.holder, {}, pipeline.seed), progress, None)
    held_to_name = {t.key: t.name for t in job.loaded.targets}
    job.encodings_by_name = {held_to_name[k]: e for k, e in state.encodings.items()}

    progress.at("export", EXPORT)
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = job.loaded.weights()
    encodings = {k: job.encodings_by_name.get(k) or raw(v) for k, v in weights.items()}
    origin = {"format": onnx_file.ONNX, "architecture": None, "sha256": sha256_file(model_path),
              "size_bytes": model_path.stat().st_size, "onnx_transposed": sorted(job.loaded.transposed)}
    container = out_dir / CONTAINER_NAME
    container_bytes = write_container(container, encodings, origin=origin, pipeline=pipeline.model_dump(mode="json"))
    dense = out_dir / ONNX_NAME
    dense.write_bytes(job.loaded.compressed_proto().SerializeToString())
    job.artifacts = [ArtifactFile(container.name, "container", container), ArtifactFile(ONNX_NAME, "onnx", dense)]
    progress.timed("export", start)

    progress.at("verify", VERIFY)
    start = time.perf_counter()
    compressed_out = _verify(job, container, weights)
    _derived_programs(job, dense, compressed_out)
    progress.timed("verify", start)

    metrics = _metrics(job, origin, container_bytes, weights, encodings, compressed_out)
    report = out_dir / "report.json"
    report.write_text(json.dumps({"pipeline": pipeline.model_dump(mode="json"), "origin": origin,
                                  "metrics": metrics}, indent=1, sort_keys=True))
    job.artifacts.append(ArtifactFile(report.name, "report", report))
    progress.hooks.on_progress(None, DONE)
    return JobOutput(job.artifacts, metrics)


def _load(model_path: Path, options, pipeline, out_dir: Path, progress: Run) -> _OnnxJob:
    """The upload, loaded and run by onnxruntime once (the reference outputs); the pipeline checked against it."""
    from compression.pipeline import check_pipeline_against_model

    problems = onnx_file.check_stages(pipeline.stages)
    if problems:
        raise CompressionError("; ".join(problems))
    progress.at("load", LOAD)
    start = time.perf_counter()
    try:
        loaded = onnx_file.load(model_path, options, seed=pipeline.seed)
        reference = onnx_file.run_bytes(model_path.read_bytes(), loaded.feeds)
    except ModelFormatError:
        raise
    except Exception as exc:   # onnxruntime refuses the graph (unknown op, bad shapes, ...)
        hint = onnx_file.guessed_dims_hint(onnx_file.parse(model_path), options)
        raise ModelFormatError(f"onnxruntime cannot run the uploaded model: {type(exc).__name__}: "
                               f"{str(exc)[:500]}{hint}") from None
    problems = check_pipeline_against_model(pipeline, {"layers_complete": True, "format": onnx_file.ONNX,
                                                       "layers": [{"name": t.key} for t in loaded.targets]})
    if problems:
        raise CompressionError("; ".join(problems))
    progress.timed("load", start)
    return _OnnxJob(loaded, pipeline, out_dir, progress, reference)


def _verify(job: _OnnxJob, container: Path, weights: dict) -> torch.Tensor:
    """The container read back (bitwise the weights) and rebuilt into the original graph, and model.onnx, both
    run beside the compressed outputs. -> those outputs."""
    from compression.job.verify import check_weights

    loaded, dense = job.loaded, job.out_dir / ONNX_NAME
    compressed_out = onnx_file.run_bytes(dense.read_bytes(), loaded.feeds)
    try:
        state_read, _ = read_container(container)
        check_weights(container.name, state_read, weights)
        rebuilt = onnx_file.with_weights(loaded.proto, state_read, loaded.transposed).SerializeToString()
    except (ContainerError, ModelFormatError) as exc:
        raise CompressionError(f"verification of {container.name} failed: {exc}") from None
    job.checks = {container.name: {"weights_bitwise_equal": True, "rebuilt_with": "original ONNX graph",
                                   "output_max_abs_diff": _check(container.name, rebuilt, loaded.feeds, compressed_out)},
                  ONNX_NAME: {"output_max_abs_diff": _check(ONNX_NAME, dense.read_bytes(), loaded.feeds,
                                                            compressed_out), "runtime": "onnxruntime"}}
    job.exports = {"onnx": {"ok": True, "source": "compressed in place (ONNX upload)"}}
    return compressed_out


def _derived_programs(job: _OnnxJob, dense: Path, compressed_out: torch.Tensor) -> None:
    """model.compact.onnx and the int8 stage's model.int8.onnx, each verified; best effort (a failure is a report)."""
    loaded, compact = job.loaded, job.out_dir / COMPACT_ONNX_NAME
    try:   # the runnable file whose size tracks the compression (see compact_onnx.py)
        info = write_compact_onnx(dense, job.encodings_by_name, compact, transposed=frozenset(loaded.transposed))
        if info.pop("written"):
            exact = check_outputs(compact.name, compact.read_bytes(), loaded.feeds, compressed_out,
                                  probe=lambda data, feeds: onnx_file.run_bytes(data, feeds, exact=True))
            job.checks[compact.name] = {"output_max_abs_diff": exact, "runtime": "onnxruntime ORT_ENABLE_BASIC"}
            job.artifacts.append(ArtifactFile(compact.name, "onnx-compact", compact))
        job.exports["onnx_compact"] = {"ok": compact.exists(), **info}
    except Exception as exc:
        compact.unlink(missing_ok=True)
        job.exports["onnx_compact"] = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"[:500]}
    int8_files, int8_report = _int8_program(job.pipeline, dense, job.out_dir, loaded.feeds, job.reference)
    if int8_report is not None:
        job.exports["int8"] = int8_report
        job.artifacts.extend(ArtifactFile(f.name, "onnx-int8", f) for f in int8_files)


def _metrics(job: _OnnxJob, origin: dict, container_bytes: int, weights: dict, encodings: dict,
             compressed_out: torch.Tensor) -> dict:
    size_before, reference = origin["size_bytes"], job.reference
    return {
        "size_bytes_before": size_before,
        "upload_bytes": size_before,
        "size_bytes_after": container_bytes,
        "compression_ratio": round(size_before / container_bytes, 4),
        "artifact_bytes": {a.name: a.path.stat().st_size for a in job.artifacts},
        "parameters_before": sum(v.numel() for v in job.loaded.initial.values()),
        "parameters_after": sum(v.numel() for v in weights.values()),
        "nonzero_parameters_after": sum(int(torch.count_nonzero(v)) for v in weights.values()),
        "output_max_abs_diff": max_abs_diff(compressed_out, reference),
        "output_mean_cosine": round(mean_cosine(compressed_out, reference), 8),
        "quality": outputs_quality(job.pipeline.quality, reference, compressed_out, classifier=False),
        "sample_inputs": [list(v.shape) for v in job.loaded.feeds.values()],
        "verification": job.checks,
        "exports": job.exports,
        "layers": layer_report(encodings, weights),
        "seed": job.pipeline.seed,
        "elapsed_seconds": job.progress.timings,
        "notes": ["onnx: weights compressed in place; model.onnx holds the dequantized (dense) values, "
                  "model.mpz + the original .onnx rebuild it (formats.onnx_file.rebuild_from_container)"],
    }
