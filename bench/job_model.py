"""A finished job's model as torch eager, for benches: the architecture plus the structure record kept in
model.safetensors' metadata, then the weights (what the service's verification rebuilds too)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from compression.formats.architectures import build_architecture
from compression.formats.structure import apply_structure


def eager(out: Path, architecture: str) -> torch.nn.Module:
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        structure = json.loads((f.metadata() or {}).get("modelpress.structure", "[]"))
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = apply_structure(build_architecture(architecture), structure)
    model.load_state_dict(state)
    return model.eval()
