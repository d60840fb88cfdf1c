"""TorchScript archives (torch.jit.save). torch.jit.load compiles TorchScript (not Python) and
unpickles with its own restricted C++ unpickler; we still refuse code that touches files."""
from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

import torch

from compression.formats._errors import ModelFormatError
from compression.formats.limits import MAX_CODE_BYTES
from compression.formats.torch_zip import TorchArchive

_DENIED = re.compile(r"from_file|\bops\.(?!aten\.|prim\.|quantized\.)\w+\.")


def check_archive(zf: zipfile.ZipFile, archive: TorchArchive) -> int:
    """Returns the bytes of tensor storage (a cheap size hint; names need the pickle)."""
    budget = MAX_CODE_BYTES
    for name in archive.under("code/"):
        if name.endswith(".debug_pkl"):
            continue
        code = archive.read(zf, name, budget)
        budget -= len(code)
        match = _DENIED.search(code.decode("utf-8", "replace"))
        if match:
            raise ModelFormatError(f"TorchScript program refused: it calls {match.group(0)!r} "
                                   "(file access and custom operators are not allowed)")
    return sum(archive.members[n].file_size for n in archive.under("data/"))


def load_program(path: Path) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # still the format users upload
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelFormatError(f"torch.jit.load failed: {type(exc).__name__}: {exc}"[:500]) from None


def _scalar_arguments(module: torch.jit.ScriptModule) -> list:
    schema = getattr(getattr(module, "forward", None), "schema", None)
    return [a for a in schema.arguments[1:] if str(a.type) != "Tensor"] if schema is not None else []


def check_tensor_arguments(module: torch.jit.ScriptModule, values: dict | None = None) -> None:
    """Jobs feed tensors (example inputs, dataset columns); a required non-tensor argument takes its value
    from options.input_values, and one without a value is refused with that fix instead of failing as
    `forward() is missing value for argument`."""
    values = values or {}
    scalars = _scalar_arguments(module)
    names = {a.name for a in scalars}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ModelFormatError(f"options.input_values names {', '.join(map(repr, unknown))}, not a non-tensor "
                               f"argument of forward ({', '.join(f'{a.name}: {a.type}' for a in scalars) or 'none'})")
    missing = [f"{a.name}: {a.type}" for a in scalars if a.name not in values and a.default_value is None
               and not str(a.type).startswith("Optional")]
    if missing:
        example = ", ".join(f'"{m.split(":")[0]}": <value>' for m in missing)
        raise ModelFormatError(f"forward takes non-tensor argument(s) without a default ({', '.join(missing)}) and "
                               f"jobs pass tensors only: give their values, e.g. options "
                               f'{{"input_values": {{{example}}}}}, and upload again')


def _state_attributes(program: torch.jit.ScriptModule) -> list[tuple[str, str, object]]:
    """Attributes that are neither parameters, buffers nor submodules, as loaded: state a program may keep
    between calls (a streaming model's recurrent state and the counters that decide when to reset it)."""
    found = []
    for path, module in program.named_modules():
        own = {n for n, _ in module.named_parameters(recurse=False)} | \
            {n for n, _ in module.named_buffers(recurse=False)} | {"training"}
        attributes = torch._C._jit_debug_module_iterators(module._c)["named_attributes"]   # no public listing
        for name, value in attributes:
            if name in own or isinstance(value, torch._C.ScriptModule):
                continue
            if isinstance(value, torch.Tensor):
                found.append((path, name, value.detach().clone()))
            elif value is None or isinstance(value, (bool, int, float)):
                found.append((path, name, value))
    return found


class BoundProgram(torch.nn.Module):
    """An uploaded TorchScript program called with tensors alone: non-tensor arguments bound to
    options.input_values, and state it keeps between calls put back as loaded before each call, so every
    batch is judged on its own and comparisons do not depend on call order. It shares the program's
    submodules and parameters (not the program as a child): names, state_dict and in-place weight edits
    are the program's own, and artifacts save `program`, its signature intact."""

    def __init__(self, program: torch.jit.ScriptModule, values: dict, state: list):
        super().__init__()
        object.__setattr__(self, "program", program)
        object.__setattr__(self, "state", state)
        for name, child in program.named_children():
            self.add_module(name, child)
        for name, param in program.named_parameters(recurse=False):
            self._parameters[name] = param
        for name, buf in program.named_buffers(recurse=False):
            self._buffers[name] = buf
        self.values = dict(values)
        self.train(program.training)

    def train(self, mode: bool = True):   # the program's own flag too (its forward reads it, e.g. dropout)
        self.program.train(mode)
        return super().train(mode)

    def __deepcopy__(self, memo):   # a copy must call its own program, whose submodules it holds
        import copy

        return BoundProgram(copy.deepcopy(self.program, memo), self.values, self.state)   # state as first loaded

    def reset(self) -> torch.jit.ScriptModule:
        """The program with its state as first loaded."""
        modules = dict(self.program.named_modules())   # (ScriptModules have no get_submodule)
        for path, name, value in self.state:
            setattr(modules[path], name, value.clone() if isinstance(value, torch.Tensor) else value)
        return self.program

    def forward(self, *inputs):
        return self.reset()(*inputs, **self.values)


def bind(program: torch.jit.ScriptModule, values: dict | None):
    """The program itself when it has nothing to bind and keeps no state."""
    state = _state_attributes(program)
    return BoundProgram(program, values or {}, state) if values or state else program


def unbound(model):
    """What artifacts save: the upload's own program, in the state it was uploaded in."""
    return model.reset() if isinstance(model, BoundProgram) else model
