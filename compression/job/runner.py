"""The one entry point the worker calls: load, compress, write, verify, measure."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
import json
import time
import warnings
from pathlib import Path

import torch

from compression.coding.container import write_container
from compression.data.outputs import max_abs_diff, mean_cosine, run
from compression.data.tensor_data import JobData, TensorData
from compression.errors import CompressionError, JobCancelled
from compression.formats import LoadedModel, hf_folder, load_model, torch_export
from compression.formats.architectures import build_architecture
from compression.formats.inspect import module_types, run_example
from compression.formats.options import loader_options
from compression.formats.structure import apply_structure
from compression.job import export, verify
from compression.job.int8_runtime import int8_runtime_artifacts
from compression.job.int8_torch import torch_int8_artifact
from compression.job.metrics import job_metrics
from compression.job.compact_onnx import write_compact_onnx
from compression.job.onnx_runner import run_onnx_job
from compression.job.quality import job_quality
from compression.job.report import layer_report, parameter_counts
from compression.job.sources import DatasetFile, ModelSource
from compression.job.stages import (
    COMPACT_ONNX_NAME,
    CONTAINER_NAME,
    DONE,
    EXPORT,
    HF_FOLDER_NAME,
    LOAD,
    ONNX_NAME,
    VERIFY,
    ArtifactFile,
    JobHooks,
    JobOutput,
    Run,
    compress,
    sha256_file,
    stored_tensors,
)
from compression.pipeline import PipelineSpec
from compression.stage import CompressionState
from compression.training.checkpoints import CheckpointFolder

__all__ = ["ArtifactFile", "CompressionError", "JobCancelled", "JobHooks", "JobOutput", "run_compression_job"]

def _copy(loaded: LoadedModel, path: Path, fmt: str, options: dict, seed: int) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # pytree deprecation noise from exported modules
            return copy.deepcopy(loaded.model)
    except Exception:   # some program modules refuse deepcopy: load a second instance instead
        return load_model(path, fmt, options, seed=seed).model


def load_job_datasets(files: dict[str, tuple[Path, str]], loaded: LoadedModel) -> JobData:
    from compression.data.datasets import DatasetError, load_dataset

    tokenizer = hf_folder.load_tokenizer(loaded.hf) if loaded.hf is not None and any(
        fmt == "jsonl" for _, fmt in files.values()) else None
    data = JobData()
    for role, (path, fmt) in files.items():
        try:
            setattr(data, role, load_dataset(Path(path), fmt, tokenizer=tokenizer))
        except DatasetError as exc:
            raise CompressionError(f"{role} dataset: {exc.message}") from None
        _check_runs(role, getattr(data, role), loaded)
    return data


def _load_teacher(source: ModelSource, student: LoadedModel, student_out: torch.Tensor, seed: int) -> torch.nn.Module:
    """An uploaded teacher must run on the student's inputs and give outputs of the same shape."""
    if source.format == "onnx":
        raise CompressionError("an ONNX model cannot be the teacher; upload a torch format")
    teacher = load_model(source.path, source.format, source.options, seed=seed,
                         sample_inputs=source.sample_inputs).model
    try:
        with torch.no_grad():
            out = (student.probe or run)(teacher, student.sample_inputs)
    except Exception as exc:
        raise CompressionError(f"the teacher does not run on the model's inputs: {type(exc).__name__}: {exc}"[:600]) \
            from None
    if out.shape != student_out.shape:
        raise CompressionError(f"the teacher's outputs {list(out.shape)} do not match the model's "
                               f"{list(student_out.shape)}")
    return teacher


def _check_runs(role: str, data: TensorData, loaded: LoadedModel) -> None:
    """The model must run on the dataset's first samples: a mismatch the submit-time check could not
    see (unknown input signature) fails here, named, before any stage runs."""
    try:
        with torch.no_grad():
            (loaded.probe or run)(loaded.model, data.take(slice(0, 2)).inputs)
    except Exception as exc:
        shapes = ", ".join(str(list(t.shape[1:])) for t in data.inputs)
        raise CompressionError(f"{role} dataset: the model does not run on its samples (per-sample input shapes "
                               f"{shapes}): {type(exc).__name__}: {exc}"[:600]) from None


def _positional(probe):
    """An exported HF program takes (input_ids, attention_mask) positionally; the probe calls by keyword."""
    return lambda program, inputs: probe(lambda input_ids, attention_mask: program(input_ids, attention_mask), inputs)


def _export_onnx(model: torch.nn.Module, inputs: tuple, path: Path, text: bool, progress: Run) -> dict:
    """Best effort: a model that does not export still gives a successful job, with the reason recorded."""
    progress.at("export", (EXPORT + VERIFY) / 2)
    start = time.perf_counter()
    try:
        result = {"ok": True, **export.write_onnx(model, inputs, path, text=text)}
    except Exception as exc:
        path.unlink(missing_ok=True)
        result = {"ok": False, "reason": f"torch.onnx.export failed: {export.failure_reason(exc)}"[:500]}
    progress.timed("export onnx", start)
    return result


def _compact_onnx(out_dir: Path, encodings: dict, weights: dict, inputs: tuple, compressed_out: torch.Tensor, probe,
                  exports: dict, checks: dict) -> ArtifactFile | None:
    """model.compact.onnx from the dense model.onnx (compact_onnx.py), verified from its bytes; best effort."""
    path = out_dir / COMPACT_ONNX_NAME
    try:
        info = write_compact_onnx(out_dir / ONNX_NAME, encodings, path, weights)
        if not info.pop("written"):
            exports["onnx_compact"] = {"ok": False, "reason": "no weight has a compact runnable form; model.onnx "
                                                              "is the smallest runnable file", **info}
            return None
        # the file holds exactly the compressed weights (checked without fusions); what a default session
        # computes (it may fuse DequantizeLinear into int8 kernels) is measured and reported beside it
        checks[path.name] = verify.verify_onnx(path, inputs, compressed_out, probe, exact=True)
        with torch.no_grad():
            default_out = probe(export.load_own_onnx(path), inputs)
    except Exception as exc:
        path.unlink(missing_ok=True)
        exports["onnx_compact"] = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"[:500]}
        return None
    exports["onnx_compact"] = {"ok": True, **info, "exact_with": "onnxruntime ORT_ENABLE_BASIC",
                               "default_session": {"output_max_abs_diff": max_abs_diff(default_out, compressed_out),
                                                   "output_mean_cosine": round(mean_cosine(default_out, compressed_out),
                                                                               8)}}
    return ArtifactFile(path.name, "onnx-compact", path)


@dataclass
class _Job:
    """What the phases of one torch-side job share."""
    model_path: Path
    model_format: str
    pipeline: PipelineSpec
    out_dir: Path
    progress: Run
    loaded: LoadedModel
    reference: torch.Tensor                 # the uploaded model's outputs on the example inputs
    state: CompressionState | None = None
    origin: dict = field(default_factory=dict)
    artifacts: list[ArtifactFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exports: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    container_bytes: int = 0

    @property
    def probe(self):
        return self.loaded.probe or run   # hf-folder: pooled, normalised sentence embeddings

    @property
    def inputs(self) -> tuple:
        return self.loaded.sample_inputs


def run_compression_job(model_path: Path, model_format: str, model_options: dict, pipeline: PipelineSpec,
                        out_dir: Path, hooks: JobHooks = JobHooks(),
                        calibration: list[tuple] | None = None, data: JobData | None = None,
                        dataset_files: dict[str, tuple[Path, str]] | None = None,
                        checkpoint_dir: Path | None = None, *, sample_inputs: DatasetFile | None = None,
                        teacher: ModelSource | None = None, measure_latency: bool = True) -> JobOutput:
    """`model_options`: the upload's LoaderOptions (or the same as a dict; checked again here);
    `calibration`: optional batches (inputs..., [int targets]) for data-driven stages (saliency pruning);
    `data`: the job's datasets by role (calibration batches are taken from it when not given);
    `dataset_files`: {role: (path, format)} of uploaded datasets, loaded here (text needs the model's tokenizer);
    `checkpoint_dir`: where training stages keep per-epoch checkpoints; a rerun with the same folder resumes;
    `sample_inputs`: the file behind options.sample_dataset; `teacher`: an uploaded teacher for training
    stages (both resolved by the worker from rows the tenant owns, never from user options)."""
    model_path, out_dir, options = Path(model_path), Path(out_dir), loader_options(model_options)
    progress = Run(hooks)
    if model_format == "onnx":   # ONNX in, ONNX out: compressed in place, run by onnxruntime
        return run_onnx_job(model_path, options, pipeline, out_dir, progress)
    job = _load_phase(model_path, model_format, options, pipeline, out_dir, progress, sample_inputs)
    if dataset_files and job.loaded.static_batch:   # submit refuses this once the upload is inspected
        raise CompressionError(torch_export.static_batch_problem(job.loaded.static_batch))
    if dataset_files:
        data = load_job_datasets(dataset_files, job.loaded)
    if calibration is None and data is not None:
        calibration = data.calibration_batches()
    teacher_model = _load_teacher(teacher, job.loaded, job.reference, pipeline.seed) if teacher else job.loaded.model
    job.state = CompressionState(_copy(job.loaded, model_path, model_format, options, pipeline.seed), {},
                                 pipeline.seed, calibration=calibration, data=data, example_inputs=job.inputs,
                                 probe=job.loaded.probe, teacher=teacher_model)
    checkpoints = CheckpointFolder(checkpoint_dir) if checkpoint_dir is not None else None
    job.state = compress(pipeline, job.state, progress, checkpoints)
    weights, encodings = stored_tensors(job.state)
    _write_phase(job, weights, encodings)
    compressed_out = _verify_phase(job, weights, encodings)
    if measure_latency:
        _file_latency(job)
    metrics = _metrics(job, weights, encodings, compressed_out, data, checkpoints, measure_latency)
    report = out_dir / "report.json"
    report.write_text(json.dumps({"pipeline": pipeline.model_dump(mode="json"), "origin": job.origin,
                                  "metrics": metrics}, indent=1, sort_keys=True))
    hooks.on_progress(None, DONE)
    return JobOutput([*job.artifacts, ArtifactFile(report.name, "report", report)], metrics)


def _load_phase(model_path: Path, model_format: str, options, pipeline: PipelineSpec, out_dir: Path, progress: Run,
                sample_inputs: DatasetFile | None) -> _Job:
    progress.at("load", LOAD)
    start = time.perf_counter()
    loaded = load_model(model_path, model_format, options, seed=pipeline.seed, sample_inputs=sample_inputs)
    # what submit checks once the upload is inspected; a job submitted before that finds out here
    types = module_types(loaded.model)
    problems = [f"stage {i} ({stage.kind}): {p}" for i, stage in enumerate(pipeline.stages)
                for p in stage.check_module_types(types)]
    if problems:
        raise CompressionError("; ".join(problems))
    job = _Job(model_path, model_format, pipeline, out_dir, progress, loaded, run_example(loaded))
    progress.timed("load", start)
    return job


def _write_phase(job: _Job, weights: dict, encodings: dict) -> None:
    """The container, dense safetensors, and the runnable programs the upload's format allows."""
    job.progress.at("export", EXPORT)
    start = time.perf_counter()
    loaded, structure, out_dir = job.loaded, job.state.structure, job.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    job.origin = {"format": job.model_format, "architecture": loaded.architecture,
                  "sha256": sha256_file(job.model_path), "size_bytes": job.model_path.stat().st_size}
    if loaded.hf is not None:   # the container rebuilds the model from this config (see CONTAINER.md)
        job.origin["hf_config"] = loaded.hf.config
    container = out_dir / CONTAINER_NAME
    job.container_bytes = write_container(container, encodings, origin=job.origin,
                                          pipeline=job.pipeline.model_dump(mode="json"), structure=structure)
    job.artifacts = [ArtifactFile(container.name, "container", container),
                     ArtifactFile("model.safetensors", "safetensors", out_dir / "model.safetensors")]
    export.write_safetensors(weights, job.artifacts[1].path, {
        "format": "pt", "modelpress.architecture": loaded.architecture or "",
        "modelpress.origin_format": job.model_format,
        **({"modelpress.structure": json.dumps(structure, separators=(",", ":"))} if structure else {})})
    _write_programs(job)
    job.progress.timed("export", start)
    job.exports["onnx"] = _export_onnx(job.state.model, job.inputs, out_dir / ONNX_NAME, loaded.hf is not None,
                                       job.progress)
    if job.exports["onnx"]["ok"]:
        job.artifacts.append(ArtifactFile(ONNX_NAME, "onnx", out_dir / ONNX_NAME))


def _write_programs(job: _Job) -> None:
    # programs are written before the compressed model ever runs, so forward-time mutation cannot leak in
    loaded, structure, out_dir, compressed = job.loaded, job.state.structure, job.out_dir, job.state.model
    if loaded.hf is not None and not structure:
        job.artifacts.append(ArtifactFile(HF_FOLDER_NAME, "hf-folder", out_dir / HF_FOLDER_NAME))
        hf_folder.write_folder_zip(job.artifacts[-1].path, job.artifacts[1].path, loaded.hf)
        job.notes.append("hf-folder: the runnable artifact is model-hf.zip (transformers.AutoModel.from_pretrained); "
                         "no .pt2 export")
    elif job.model_format == "torchscript" and not structure:
        job.artifacts.append(ArtifactFile("model.torchscript.pt", "torchscript", out_dir / "model.torchscript.pt"))
        export.write_torchscript(compressed, job.inputs, job.artifacts[-1].path)
    else:
        if structure and loaded.hf is not None:
            job.notes.append("hf-folder: not exported; the architecture changed in ways config.json cannot describe. "
                             "Runnable artifacts: model.pt2 and model.onnx, or the container via modelpress")
        try:
            job.exports["pt2"] = {"ok": True, **export.write_pt2(compressed, job.inputs, out_dir / "model.pt2")}
            job.artifacts.append(ArtifactFile("model.pt2", "torch-export", out_dir / "model.pt2"))
        except Exception as exc:
            if job.model_format == "torch-export":
                raise CompressionError(f"re-exporting the compressed program failed: {exc}"[:500]) from None
            job.notes.append(f"no .pt2 artifact: torch.export failed ({type(exc).__name__})")


def _verify_phase(job: _Job, weights: dict, encodings: dict) -> torch.Tensor:
    """Every artifact reloaded from its bytes and run; then the files derived from the verified ONNX."""
    job.progress.at("verify", VERIFY)
    start = time.perf_counter()
    loaded, inputs, probe = job.loaded, job.inputs, job.probe
    compressed, structure, arch = job.state.model, job.state.structure, loaded.architecture
    compressed_out = probe(compressed, inputs)
    checks = job.checks
    container = job.artifacts[0].path
    checks[container.name] = verify.verify_container(container, weights, inputs, compressed_out,
                                                     None if arch or loaded.hf else job.model_path, probe)
    build = (lambda: apply_structure(build_architecture(arch), structure)) if arch else \
        (lambda: apply_structure(hf_folder.module_from_config(loaded.hf.config), structure)) if loaded.hf else None
    checks["model.safetensors"] = verify.verify_safetensors(
        job.artifacts[1].path, weights, build, inputs, compressed_out, probe)
    for art in job.artifacts[2:]:
        if art.kind == "hf-folder":
            checks[art.name] = verify.verify_hf_folder(art.path, weights, inputs, compressed_out, probe)
        elif art.kind == "onnx":   # best effort: an ONNX file that does not verify is dropped, the job goes on
            try:
                checks[art.name] = verify.verify_onnx(art.path, inputs, compressed_out, probe)
            except CompressionError as exc:
                job.exports["onnx"] = {"ok": False, "reason": str(exc)[:500]}
                art.path.unlink(missing_ok=True)
        else:
            load = export.load_own_torchscript if art.kind == "torchscript" else export.load_own_pt2
            checks[art.name] = verify.verify_program(art.path, load, inputs, compressed_out,
                                                     _positional(probe) if loaded.hf is not None else probe)
        job.progress.at("verify", VERIFY + (DONE - VERIFY) * 0.9 * len(checks) / (len(job.artifacts) + 1))
    _derived_programs(job, weights, encodings, compressed_out)
    job.progress.timed("verify", start)
    job.artifacts = [a for a in job.artifacts if a.path.exists()]
    return compressed_out


def _derived_programs(job: _Job, weights: dict, encodings: dict, compressed_out: torch.Tensor) -> None:
    """From the verified model.onnx: the compact ONNX; for the int8 stage, programs with int8 kernels."""
    out_dir, inputs, probe = job.out_dir, job.inputs, job.probe
    onnx_ok = job.exports["onnx"]["ok"] and (out_dir / ONNX_NAME).exists()
    if onnx_ok:   # the runnable file whose size tracks the compression
        arrays = {k: v.float().numpy() for k, v in weights.items() if v.is_floating_point() and v.ndim == 2}
        compact = _compact_onnx(out_dir, encodings, arrays, inputs, compressed_out, probe, job.exports, job.checks)
        if compact is not None:
            job.artifacts.append(compact)
    if (out_dir / "model.pt2").exists():
        compact_pt2 = _compact_pt2(job, encodings, compressed_out)
        if compact_pt2 is not None:
            job.artifacts.append(compact_pt2)
    if job.loaded.hf is not None and not job.state.structure:
        ct = _ct_folder(job, weights, encodings, compressed_out)
        if ct is not None:
            job.artifacts.append(ct)
    stages = job.pipeline.stages
    int8_files, int8_report = int8_runtime_artifacts(stages, out_dir / ONNX_NAME if onnx_ok else None, out_dir,
                                                     job.state.calibration, inputs, compressed_out, probe)
    if int8_report is not None:   # int8 stage: programs with int8 kernels, their output difference recorded
        job.exports["int8"] = int8_report
        job.artifacts.extend(ArtifactFile(f.name, "onnx-int8", f) for f in int8_files)
        int8_spec = next(s for s in stages if s.kind == "int8")
        torch_files, job.exports["int8_torch"] = torch_int8_artifact(
            int8_spec, job.state.model, inputs, out_dir, compressed_out, probe, job.loaded.hf is not None)
        job.artifacts.extend(ArtifactFile(f.name, "torchscript-int8", f) for f in torch_files)


_LOADERS = {"onnx": export.load_own_onnx, "onnx-compact": export.load_own_onnx, "onnx-int8": export.load_own_onnx,
            "torch-export": export.load_own_pt2, "torch-export-compact": export.load_own_pt2,
            "torchscript": export.load_own_torchscript, "torchscript-int8": export.load_own_torchscript}


def _file_latency(job: _Job) -> None:
    """Each runnable file loaded from its bytes and timed side by side at the example batch (programs may keep
    the export's static batch), within the job's latency budget; recorded per file for the artifact listing."""
    from compression.job.metrics import job_budget_s, latency

    budget = job_budget_s()
    if budget == 0:
        return
    try:
        files = {a.name: _LOADERS[a.kind](a.path) for a in job.artifacts if a.kind in _LOADERS}
        if not files:
            return
        batch = job.inputs[0].shape[0] if job.inputs and job.inputs[0].ndim else 1
        measured = latency(files, job.inputs, batch_sizes=(batch,), budget_s=budget, call=job.probe,
                           gpu=False)["cpu"][f"batch_{batch}"]
    except Exception as exc:   # timing is a report, never a failure
        job.notes.append(f"per-file latency not measured: {type(exc).__name__}: {str(exc)[:200]}")
        return
    for name, row in measured.items():
        if "median_ms" in row:
            job.checks.setdefault(name, {}).update(latency_ms=row["median_ms"], latency_batch=batch)


def _compact_pt2(job: _Job, encodings: dict, compressed_out: torch.Tensor) -> ArtifactFile | None:
    """model.compact.pt2 (compact_pt2.py), verified from its bytes; best effort."""
    from compression.job.compact_pt2 import COMPACT_PT2_NAME, write_compact_pt2

    path = job.out_dir / COMPACT_PT2_NAME
    try:
        info = write_compact_pt2(job.state.model, encodings, job.inputs, path)
        if not info["written"]:
            job.exports["pt2_compact"] = {"ok": False, "reason": "no Linear/Conv2d weight is integer codes or a "
                                                                 "codebook; model.pt2 is the runnable program"}
            return None
        job.checks[path.name] = verify.verify_program(path, export.load_own_pt2, job.inputs, compressed_out, job.probe)
    except Exception as exc:
        path.unlink(missing_ok=True)
        job.exports["pt2_compact"] = {"ok": False, "reason": export.failure_reason(exc)}
        return None
    job.exports["pt2_compact"] = {"ok": True, "layers": info["layers"]}
    return ArtifactFile(path.name, "torch-export-compact", path)


def _ct_folder(job: _Job, weights: dict, encodings: dict, compressed_out: torch.Tensor) -> ArtifactFile | None:
    """model-ct.zip (compression.job.hf_compressed): measured from the folder, then verified from the zip's
    bytes. Best effort: a failure is recorded in exports, the job goes on."""
    import tempfile

    from compression.job import hf_compressed

    out = job.out_dir / hf_compressed.CT_FOLDER_NAME
    try:
        with tempfile.TemporaryDirectory(prefix="modelpress-ct-") as tmp:
            folder = Path(tmp) / "model"
            info = hf_compressed.build_ct_folder(job.state.model, encodings, job.loaded.hf, folder)
            if not info.pop("written"):
                job.exports["hf_compressed_tensors"] = {"ok": False, **info}
                return None
            loaded = hf_compressed.load_folder(folder)
            folder_out = job.probe(loaded, job.inputs)   # (the first forward decompresses the Linear weights)
            folder_state = loaded.state_dict()
            exact = all(k in folder_state and torch.equal(folder_state[k], weights[k]) for k in info["linear_weights"])
            fidelity = {"output_mean_cosine": round(mean_cosine(folder_out, job.reference), 6),
                        "output_max_abs_diff": max_abs_diff(folder_out, job.reference)}
            weights_bytes = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
            (folder / "README.md").write_text(hf_compressed.model_card(
                job.pipeline.model_dump(mode="json"), job.origin["size_bytes"], weights_bytes, fidelity, info))
            hf_compressed.zip_folder(folder, out)
        reread = job.probe(hf_compressed.load_ct_zip(out), job.inputs)   # from the zip's bytes, as a user would
        if not max_abs_diff(reread, folder_out) <= 1e-6:
            raise CompressionError("the zipped folder does not reproduce the folder's outputs")
    except Exception as exc:
        out.unlink(missing_ok=True)
        job.exports["hf_compressed_tensors"] = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"[:500]}
        return None
    job.exports["hf_compressed_tensors"] = {"ok": True, "weights_bytes": weights_bytes, **fidelity,
                                            "vs_compressed_model_max_abs_diff": max_abs_diff(folder_out, compressed_out),
                                            "linear_layers": len(info["linear_weights"]),
                                            "linear_weights_bitwise_equal": exact, "stored": info["stored"]}
    job.checks[out.name] = {"output_max_abs_diff": max_abs_diff(reread, compressed_out),
                            "output_mean_cosine": fidelity["output_mean_cosine"], "runtime":
                            "transformers + compressed-tensors", "note": "not bounded: tensors outside Linear "
                            "layers are stored as float8/float16 (see the folder's README.md)"}
    return ArtifactFile(out.name, "hf-compressed-tensors", out)


def _metrics(job: _Job, weights: dict, encodings: dict, compressed_out: torch.Tensor, data: JobData | None,
             checkpoints: CheckpointFolder | None, measure_latency: bool) -> dict:
    loaded, compressed, progress = job.loaded, job.state.model, job.progress
    params_before, _ = parameter_counts(loaded.model)
    params_after, nonzero_after = parameter_counts(compressed)
    costs, cost_notes = job_metrics(loaded.model, compressed, job.inputs, call=loaded.probe or (lambda m, x: m(*x)),
                                    measure_latency=measure_latency)
    # hf-folder: the dense weights in the upload (the archive also holds tokenizer files, README, ...)
    size_before = loaded.weights_bytes or job.origin["size_bytes"]
    return {
        "size_bytes_before": size_before,
        "upload_bytes": job.origin["size_bytes"],
        "size_bytes_after": job.container_bytes,
        "compression_ratio": round(size_before / job.container_bytes, 4),
        "artifact_bytes": {a.name: a.path.stat().st_size for a in job.artifacts},
        "parameters_before": params_before,
        "parameters_after": params_after,
        **costs,   # macs_before, macs_after, latency
        "nonzero_parameters_after": nonzero_after,
        "output_max_abs_diff": max_abs_diff(compressed_out, job.reference),
        "output_mean_cosine": round(mean_cosine(compressed_out, job.reference), 8),
        "quality": job_quality(job.pipeline.quality, progress.evaluation, data, job.state.teacher, compressed, loaded,
                               job.reference, compressed_out),
        "sample_inputs": [list(t.shape) for t in job.inputs if isinstance(t, torch.Tensor)],
        "verification": job.checks,
        "exports": job.exports,
        "layers": layer_report(encodings, weights),
        "seed": job.pipeline.seed,
        "elapsed_seconds": progress.timings,
        "stages": progress.stage_reports,
        **({"evaluation": progress.evaluation} if progress.evaluation else {}),
        **({"training_log": progress.training_log} if progress.training_log else {}),
        **({"resumed_from_checkpoints": sorted(checkpoints.resumed)} if checkpoints and checkpoints.resumed else {}),
        **({"datasets": {role: {"samples": len(d)} for role, d in vars(data).items() if d is not None}}
           if data is not None else {}),
        "notes": job.notes + cost_notes,
    }
