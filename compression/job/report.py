"""Per-layer report and model statistics for the job's metrics."""
from __future__ import annotations

import torch

from compression.coding.encoding import Encoded
from mpclient.format import codecs

LAYER_REPORT_CAP = 500


def layer_report(encodings: dict[str, Encoded], state: dict[str, torch.Tensor]) -> list[dict]:
    rows = []
    for name, enc in list(encodings.items())[:LAYER_REPORT_CAP]:
        t = state[name]
        rows.append({
            "name": name, "shape": list(enc.shape), "encoding": codecs.describe(enc),
            "bits_per_weight": round(enc.bits_per_element(), 4),   # scales, zero points included
            "stored_bytes": enc.nbytes,
            "density": round(float(torch.count_nonzero(t)) / max(t.numel(), 1), 6),
            **codecs.details(enc),
        })
    return rows


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, nonzero parameters); tied parameters counted once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(int(torch.count_nonzero(p.detach())) for p in params)
