"""Dense artifacts of the compressed model: safetensors weights and runnable programs."""
from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file


def write_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    # clones: safetensors refuses tensors that share storage (tied weights)
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path), metadata=metadata)
    _sort_header(Path(path))


def _sort_header(path: Path) -> None:
    """The same weights and metadata give the same bytes: safetensors' writer puts `__metadata__` keys in a
    random order (a Rust HashMap) and has no option against it, so the header is written again with sorted
    keys, padded with spaces (as the format pads it) to its old length; the tensor bytes do not move."""
    with open(path, "r+b") as f:
        length = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(length))
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        if len(text) > length:   # cannot happen: the same JSON without whitespace; leave the file as written
            return
        f.seek(8)
        f.write(text + b" " * (length - len(text)))


def write_torchscript(model: torch.nn.Module, sample_inputs: tuple, path: Path) -> None:
    from compression.formats.torchscript import unbound

    model = unbound(model)   # bound non-tensor arguments: save the upload's program, its signature intact
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch.jit is deprecated but still the upload's own format
        program = model if isinstance(model, torch.jit.ScriptModule) else torch.jit.trace(model, sample_inputs)
        torch.jit.save(program, str(path))


def write_pt2(model: torch.nn.Module, sample_inputs: tuple, path: Path) -> dict:
    """A batch dimension left dynamic where the model allows it (Dim.AUTO: torch decides per input; a program
    uploaded with a dynamic batch keeps it), else a program fixed to the sample batch."""
    auto = tuple({0: torch.export.Dim.AUTO} if isinstance(t, torch.Tensor) and t.ndim else None
                 for t in sample_inputs)
    try:
        program = torch.export.export(model, tuple(sample_inputs), dynamic_shapes=auto)
    except Exception:   # noqa: BLE001 - the static export below raises the error worth reporting
        program = torch.export.export(model, tuple(sample_inputs))
    torch.export.save(program, str(path))
    dims = [p.meta["val"].shape[0] for p in program.graph.find_nodes(op="placeholder")
            if "val" in p.meta and isinstance(p.meta["val"], torch.Tensor) and p.meta["val"].ndim]
    return {"dynamic_batch": any(not isinstance(d, int) for d in dims)}


def load_own_torchscript(path: Path) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu")


def load_own_pt2(path: Path) -> torch.nn.Module:
    """Only for files this job wrote itself (uploads go through formats.load_program)."""
    return torch.export.load(str(path)).module()


class _TextModel(torch.nn.Module):
    """Hugging Face text model called with (input_ids, attention_mask); outputs as a tuple of tensors."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        # the wrapper takes the model's mode: exporters that restore "the module's mode" afterwards would
        # otherwise switch the wrapped model to training (dropout on)
        self.train(model.training)

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.to_tuple() if hasattr(out, "to_tuple") else out


def write_onnx(model: torch.nn.Module, sample_inputs: tuple, path: Path, text: bool = False) -> dict:
    """One self-contained .onnx (dynamo exporter, weights inside). Dim 0 of every input is dynamic (and
    dim 1 for text models); falls back to static shapes where export cannot keep them
    dynamic. `text`: a Hugging Face model called as model(input_ids=..., attention_mask=...)."""
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    from compression.formats.torchscript import BoundProgram

    # torch.export cannot take TorchScript (and tracing a stateful one with fake tensors leaves fakes in its
    # attributes): the legacy exporter, which runs it for real; bound arguments become constants
    if isinstance(model, BoundProgram):   # bound arguments as the exporter's trailing kwargs dict (constants)
        return _write_onnx_torchscript(model.reset(), sample_inputs, path, dict(model.values))
    if isinstance(model, torch.jit.ScriptModule):
        return _write_onnx_torchscript(model, sample_inputs, path)
    module = _TextModel(model) if text else model
    names = ["input_ids", "attention_mask"] if text else None
    batch, seq = torch.export.Dim("batch", min=1, max=1 << 16), torch.export.Dim("seq", min=1, max=1 << 16)
    dynamic = tuple({0: batch, 1: seq} if text and t.ndim >= 2 else {0: batch} if t.ndim else {}
                    for t in sample_inputs)
    first_error = None
    for shapes in (dynamic, None):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(module, tuple(sample_inputs), dynamo=True, external_data=False,
                                            dynamic_shapes=shapes, input_names=names, verbose=False,
                                            report=False, optimize=True)
            program.save(str(path), external_data=False)
            info = {"dynamic_axes": shapes is not None, "exporter": "dynamo"}
            if first_error is not None:
                info["dynamic_failed"] = first_error
            return info
        except Exception as exc:
            first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
            if shapes is None:
                raise
    raise AssertionError("unreachable")


def _write_onnx_torchscript(model: torch.jit.ScriptModule, sample_inputs: tuple, path: Path,
                            kwargs: dict | None = None) -> dict:
    names = [f"input_{i}" for i in range(len(sample_inputs))]
    axes = {n: {0: "batch"} for n, t in zip(names, sample_inputs) if t.ndim}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(sample_inputs) + ((kwargs,) if kwargs else ()), str(path), dynamo=False,
                          input_names=names, dynamic_axes=axes)
    return {"dynamic_axes": bool(axes), "exporter": "torchscript"}


def failure_reason(exc: BaseException) -> str:
    """The innermost cause of an export failure, one line, without terminal colour codes."""
    import re

    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(root).__name__}: {root}")
    return " ".join(text.split())[:500]


class OrtModule:
    """An onnxruntime session called like the torch model (positional or keyword inputs, tuple out)."""

    def __init__(self, path: Path, exact: bool = False):
        from compression.formats.onnx_file import session

        self.session = session(Path(path).read_bytes(), exact=exact)
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *args, **kwargs):
        feeds = dict(zip(self.names, args))
        feeds.update(kwargs)
        outs = self.session.run(None, {k: v.detach().cpu().numpy() for k, v in feeds.items() if k in self.names})
        return tuple(torch.from_numpy(o) for o in outs)


def load_own_onnx(path: Path, exact: bool = False) -> OrtModule:
    return OrtModule(path, exact)
