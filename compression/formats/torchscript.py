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


def check_tensor_arguments(module: torch.jit.ScriptModule) -> None:
    """Jobs feed tensors (example inputs, dataset columns); a required non-tensor argument has no value to
    give, so it is refused with the fix instead of failing as `forward() is missing value for argument`."""
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is None:
        return
    scalars = [f"{a.name}: {a.type}" for a in schema.arguments[1:]
               if str(a.type) != "Tensor" and a.default_value is None and not str(a.type).startswith("Optional")]
    if scalars:
        bound = ", ".join(f"{s.split(':')[0]}=<value>" for s in scalars)
        raise ModelFormatError(
            f"forward takes non-tensor argument(s) without a default ({', '.join(scalars)}), and jobs pass tensors "
            f"only. Bind them and upload the wrapper: class Bound(torch.nn.Module): def __init__(self, m): "
            f"super().__init__(); self.m = m; def forward(self, x): return self.m(x, {bound}); then "
            f"torch.jit.save(torch.jit.script(Bound(model)), path)")
