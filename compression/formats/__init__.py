"""Model formats: cheap, non-executing detection (`sniff`) and safe loading (`load_model`).

Detection is by content. Nothing here unpickles arbitrary objects: torch archives go through
torch's weights_only unpickler, TorchScript through torch.jit.load, .pt2 through torch.export.load
only after an allow-list check of the archive (see torch_export.py).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file

from compression.formats.architectures import build_architecture, get_architecture
from compression.formats import archives, hf_folder, onnx_file, safetensors_file, state_dict, torch_export, torchscript
from compression.formats import hf_config as hf_config_module
from compression.formats._errors import REFUSED, UNSUPPORTED, ModelFormatError
from compression.formats.inputs import SAMPLE_BATCH, inputs_from_options, random_input
from compression.formats.limits import MAX_MODEL_BYTES, MAX_ZIP_MEMBERS
from compression.formats.options import LoaderOptions, as_dict
from compression.formats.program_modules import as_plain_module
from compression.formats.summary import TensorMeta, build_summary, check_against_architecture, require_architecture
from compression.formats.torch_zip import STATE_DICT, TORCH_EXPORT, TORCHSCRIPT, classify, open_archive

if TYPE_CHECKING:
    from compression.job.sources import DatasetFile

SAFETENSORS = "safetensors"
HF_FOLDER = hf_folder.HF_FOLDER
ONNX = onnx_file.ONNX
FORMATS = (SAFETENSORS, STATE_DICT, TORCHSCRIPT, TORCH_EXPORT, HF_FOLDER, ONNX)

__all__ = ["FORMATS", "LoadedModel", "ModelFormatError", "ModelInfo", "REFUSED", "UNSUPPORTED",
           "load_model", "load_program", "sniff", "HF_FOLDER", "ONNX"]


@dataclass
class ModelInfo:
    format: str
    summary: dict


@dataclass
class LoadedModel:
    model: torch.nn.Module
    format: str
    architecture: str | None
    sample_inputs: tuple
    # how jobs turn outputs into the [batch, features] they compare (None: outputs.run)
    probe: Callable[[torch.nn.Module, tuple], torch.Tensor] | None = None
    hf: hf_folder.HFParts | None = None      # hf-folder: config and tokenizer files for export
    weights_bytes: int | None = None         # hf-folder: size of the uploaded model.safetensors
    # where sample_inputs came from: "dataset" (options.sample_dataset), "tokenizer" (sample sentences),
    # "program" (example inputs stored in a .pt2) or "random"; the quality verdict says which
    inputs_origin: str = "random"
    # .pt2: the program's own input signature (symbolic dims by name) and its batch when fixed at export
    input_signature: list[dict] | None = None
    static_batch: int | None = None


def _detect(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelFormatError(f"model file is too large ({size} > {MAX_MODEL_BYTES} bytes)")
    with open(path, "rb") as f:
        head = f.read(512)
    kind = archives.archive_kind(head)
    if kind == archives.ZIP:
        count = archives.zip_entry_count(path)
        if count is not None and count > MAX_ZIP_MEMBERS:
            raise ModelFormatError(f"archive has too many members ({count} > {MAX_ZIP_MEMBERS})")
        return f"{HF_FOLDER}:zip" if hf_folder.is_hf_zip(path) else "zip"
    if kind == archives.TAR:
        return f"{HF_FOLDER}:tar"
    if safetensors_file.looks_like_safetensors(head, size):
        return SAFETENSORS
    if head[:1] == b"\x80":   # pickle protocol 2+ (also the legacy torch.save format)
        raise ModelFormatError(f"this is a raw Python pickle: {state_dict.PICKLE_HINT}")
    if onnx_file.looks_like_onnx(head):
        return ONNX
    raise ModelFormatError("not a model file we recognise (expected safetensors, a torch.save state_dict, "
                           "TorchScript, a torch.export .pt2 archive, ONNX or a Hugging Face model folder as "
                           ".zip/.tar.gz)", UNSUPPORTED)


def _bare_weights(metas: list[TensorMeta], architecture: str | None, hf_config: dict | None, fmt: str) -> dict:
    """Summary of bare weights described by a built-in architecture or a transformers config."""
    if hf_config is not None and not architecture:
        config = hf_config_module.checked(hf_config)
        return build_summary(hf_config_module.check_tensors(metas, config), None, hf_model_type=config["model_type"])
    arch = require_architecture(architecture, fmt)
    return build_summary(check_against_architecture(metas, arch), arch)


def sniff(path: Path, *, architecture: str | None = None, hf_config: dict | None = None,
          parse_onnx: bool = True) -> ModelInfo:
    """Identify and summarise an upload from headers and archive indexes; never runs its code.
    parse_onnx=False (the API): ONNX framing only; the graph is parsed by the worker's inspection."""
    path = Path(path)
    kind = _detect(path)
    if kind.startswith(HF_FOLDER):
        return ModelInfo(HF_FOLDER, hf_folder.sniff_archive(path, kind.split(":")[1]))
    if kind == ONNX:
        return ModelInfo(ONNX, onnx_file.summarise(onnx_file.parse(path)) if parse_onnx
                         else onnx_file.check_framing(path))
    if kind == SAFETENSORS:
        return ModelInfo(SAFETENSORS, _bare_weights(safetensors_file.read_header(path), architecture, hf_config,
                                                    SAFETENSORS))
    zf, archive = open_archive(path)
    with zf:
        fmt = classify(archive)
        if fmt == STATE_DICT:
            metas = state_dict.metas(state_dict.load_state_dict(path, archive))
            return ModelInfo(fmt, _bare_weights(metas, architecture, hf_config, "torch state_dict"))
        if fmt == TORCHSCRIPT:
            storage = torchscript.check_archive(zf, archive)
            return ModelInfo(fmt, build_summary(None, None, weight_bytes=storage))
        metas = torch_export.check_archive(zf, archive)
        return ModelInfo(fmt, build_summary(metas, None))


def _eval(model: torch.nn.Module) -> torch.nn.Module:
    with contextlib.suppress(NotImplementedError):   # unlifted exported modules refuse .eval()
        model.eval()
    return model


def _builtin(tensors: dict[str, torch.Tensor], arch: str, seed: int) -> tuple[torch.nn.Module, tuple]:
    model = build_architecture(arch)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, strict=True)
    shape = (SAMPLE_BATCH, *get_architecture(arch).input_shape)
    return model.float().eval(), (random_input(shape, torch.float32, seed),)


def _load_bare(tensors: dict[str, torch.Tensor], fmt: str, options: dict, seed: int, sample_inputs) -> LoadedModel:
    if options.get("hf_config") is not None and not options.get("architecture"):
        config = hf_config_module.checked(options["hf_config"])
        model, inputs = hf_config_module.build(tensors, config, seed)
        return LoadedModel(model, fmt, None, inputs, probe=hf_folder.sentence_embeddings,
                           hf=hf_folder.HFParts(config, {}))
    arch = options["architecture"]
    model, inputs = _builtin(tensors, arch, seed)
    if sample_inputs is not None:   # real samples beat random ones for metrics and export
        inputs = inputs_from_options(options, seed, sample_inputs)
    return LoadedModel(model, fmt, arch, inputs, inputs_origin="dataset" if sample_inputs is not None else "random")


def load_model(path: Path, format: str, options: LoaderOptions | dict | None, *, seed: int = 0,
               sample_inputs: DatasetFile | None = None) -> LoadedModel:
    """Load for compression (worker side). Re-checks everything sniff checked: the file is untrusted.
    `sample_inputs`: the dataset file behind options.sample_dataset, as the worker resolved it."""
    path, options = Path(path), as_dict(options)
    if format not in FORMATS:
        raise ModelFormatError(f"unknown model format {format!r}")
    detected = _detect(path)
    if detected == ONNX or format == ONNX:   # compressed in place by compression.job.onnx_runner, never as torch
        raise ModelFormatError("ONNX models are compressed in place (compression.job.onnx_runner), not loaded as torch"
                               if detected == format else f"file is {detected}, not {format}")
    if detected.startswith(HF_FOLDER) or format == HF_FOLDER:
        if not detected.startswith(HF_FOLDER):
            raise ModelFormatError(f"file is not a {HF_FOLDER} archive")
        if format != HF_FOLDER:
            raise ModelFormatError(f"file is {HF_FOLDER}, not {format}")
        model, inputs, parts, weights_bytes = hf_folder.load_archive(path, detected.split(":")[1], seed)
        return LoadedModel(model, format, None, inputs, probe=hf_folder.sentence_embeddings, hf=parts,
                           weights_bytes=weights_bytes, inputs_origin="tokenizer")
    if detected == SAFETENSORS:
        if format != SAFETENSORS:
            raise ModelFormatError(f"file is safetensors, not {format}")
        _bare_weights(safetensors_file.read_header(path), options.get("architecture"), options.get("hf_config"),
                      SAFETENSORS)
        return _load_bare(load_file(str(path)), format, options, seed, sample_inputs)
    zf, archive = open_archive(path)
    with zf:
        fmt = classify(archive)
        if fmt != format:
            raise ModelFormatError(f"file is {fmt}, not {format}")
        if fmt == STATE_DICT:
            tensors = state_dict.load_state_dict(path, archive)
            _bare_weights(state_dict.metas(tensors), options.get("architecture"), options.get("hf_config"),
                          "torch state_dict")
            return _load_bare(tensors, format, options, seed, sample_inputs)
    inputs = inputs_from_options(options, seed, sample_inputs)
    if fmt == TORCHSCRIPT:
        if inputs is None:
            raise ModelFormatError('a TorchScript model needs options {"input_shape": [batch, ...]} '
                                   "to build example inputs")
        program = load_program(path, fmt)
        values = options.get("input_values")
        torchscript.check_tensor_arguments(program, values)
        model = torchscript.bind(program, values)
        return LoadedModel(model, fmt, None, inputs, probe=_bound_probe(values) if model is not program else None,
                           inputs_origin="dataset" if sample_inputs is not None else "random")
    program = _checked_program(path, fmt)
    origin = "dataset" if sample_inputs is not None else "random"
    if inputs is None:
        origin = "program"
        args, kwargs = program.example_inputs or ((), {})
        if not args or kwargs:
            raise ModelFormatError('the .pt2 archive has no positional example inputs; pass options '
                                   '{"input_shape": [batch, ...]}')
        inputs = tuple(args)
    signature = torch_export.input_signature(program)
    static = signature[0]["shape"][0] if signature and signature[0]["shape"] and \
        type(signature[0]["shape"][0]) is int else None
    return LoadedModel(as_plain_module(program.module()), fmt, None, inputs, inputs_origin=origin,
                       input_signature=signature, static_batch=static)


def _bound_probe(values: dict | None):
    """Runs the job's model (a BoundProgram) and the programs reloaded from artifacts (the upload's own
    signature, fresh state) alike: the latter get options.input_values as keyword arguments."""
    from compression.data.outputs import run

    def probe(model, inputs):
        if isinstance(model, torchscript.BoundProgram) or not values:
            return run(model, inputs)
        return run(lambda *xs: model(*xs, **values), inputs)
    return probe


def _checked_program(path: Path, fmt: str):
    zf, archive = open_archive(path)
    with zf:
        if classify(archive) != fmt:
            raise ModelFormatError(f"file is not {fmt}")
        (torchscript if fmt == TORCHSCRIPT else torch_export).check_archive(zf, archive)
    return (torchscript if fmt == TORCHSCRIPT else torch_export).load_program(path)


def load_program(path: Path, format: str) -> torch.nn.Module:
    """A TorchScript or .pt2 file as a runnable module, after the same safety checks as load_model."""
    if format not in (TORCHSCRIPT, TORCH_EXPORT):
        raise ModelFormatError(f"{format} files hold no program")
    program = _checked_program(Path(path), format)
    # the job's loader lifts a program's layers the same way, so structure records name the same modules
    return _eval(program) if format == TORCHSCRIPT else as_plain_module(program.module())
