"""torch.save(model.state_dict()) archives: loaded only through torch's weights_only unpickler."""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from compression.formats._errors import ModelFormatError
from compression.formats.limits import MAX_PICKLE_BYTES, MAX_TENSORS
from compression.formats.summary import TensorMeta
from compression.formats.torch_zip import TorchArchive

PICKLE_HINT = ("pickled Python objects are never loaded; save a state_dict with "
               "safetensors.torch.save_file(model.state_dict(), ...) or torch.save(model.state_dict(), ...), "
               "or export a program with torch.export.save / torch.jit.save(torch.jit.script(model))")

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def load_state_dict(path: Path, archive: TorchArchive) -> dict[str, torch.Tensor]:
    """Tensors stay memory-mapped; the pickle index is bounded before torch reads it."""
    if archive.members["data.pkl"].file_size > MAX_PICKLE_BYTES:
        raise ModelFormatError("the archive's pickle index is too large")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError, EOFError) as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it references {found.group(1)})" if found else ""
        raise ModelFormatError(f"the archive holds Python objects other than tensors{what}; {PICKLE_HINT}") from None
    # common checkpoint wrappers: {"state_dict": {...}}
    if isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in _WRAPPER_KEYS \
            and isinstance(next(iter(obj.values())), dict):
        obj = next(iter(obj.values()))
    if not isinstance(obj, dict) or not obj:
        raise ModelFormatError(f"expected a non-empty dict of tensors (a state_dict); {PICKLE_HINT}")
    if len(obj) > MAX_TENSORS:
        raise ModelFormatError(f"too many tensors ({len(obj)} > {MAX_TENSORS})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelFormatError(f"state_dict entries must map names to tensors; bad entries: {bad[:5]}")
    return dict(obj)


def metas(state: dict[str, torch.Tensor]) -> list[TensorMeta]:
    return [TensorMeta(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()]
