"""Per-layer report and model statistics for the job's metrics."""
from __future__ import annotations

import torch

from compression.coding.encoding import Encoded

LAYER_REPORT_CAP = 500


def _coded(enc: Encoded) -> bool:
    return any(isinstance(p, Encoded) and p.codec == "huffman" for p in enc.parts.values())


def describe(enc: Encoded) -> str:
    huff = " +huffman" if _coded(enc) else ""
    if enc.codec == "raw":
        return enc.dtype
    if enc.codec == "cast":
        return enc.parts["values"].storage
    if enc.codec == "affine":
        p = enc.params
        if p.get("ternary"):
            return f"ternary {'per_tensor' if p.get('axis') is None else 'per_channel'}{huff}"
        if "frac_bits" in p:
            return f"fixed16 x2^-{p['frac_bits']}{huff}"
        layout = f"group {p['group_size']}" if p.get("group_size") else \
            "per_tensor" if p.get("axis") is None else "per_channel"
        return (f"int{p['bits']} {layout} "
                f"{'symmetric' if p.get('symmetric', True) else 'asymmetric'}{huff}")
    if enc.codec == "sign":
        return f"binary {'per_tensor' if enc.params.get('axis') is None else 'per_channel'}"
    if enc.codec == "codebook":
        return f"codebook {enc.params.get('bits')}-bit {enc.parts['centroids'].storage}{huff}"
    if enc.codec == "sparse":
        values = enc.parts["values"]
        inner = describe(values) if isinstance(values, Encoded) else values.storage
        return f"sparse {enc.params.get('bits')}-bit gaps{huff} / {inner}"
    if enc.codec == "rows":
        return f"rows {describe(enc.parts['a'])} | {describe(enc.parts['b'])}"
    return enc.codec


def _details(enc: Encoded) -> dict:
    """Index overhead (sparse gaps) and codebook size, for the per-layer report."""
    out = {}
    if enc.codec == "sparse":
        gaps = enc.parts["gaps"]
        out["index_bits_per_weight"] = round(8 * gaps.nbytes / max(enc.numel, 1), 4)
        values = enc.parts["values"]
        if isinstance(values, Encoded):
            out.update({k: v for k, v in _details(values).items() if k == "codebook_size"})
    if enc.codec == "codebook":
        out["codebook_size"] = enc.parts["centroids"].numel
    return out


def layer_report(encodings: dict[str, Encoded], state: dict[str, torch.Tensor]) -> list[dict]:
    rows = []
    for name, enc in list(encodings.items())[:LAYER_REPORT_CAP]:
        t = state[name]
        rows.append({
            "name": name, "shape": list(enc.shape), "encoding": describe(enc),
            "bits_per_weight": round(enc.bits_per_element(), 4),   # scales, zero points included
            "stored_bytes": enc.nbytes,
            "density": round(float(torch.count_nonzero(t)) / max(t.numel(), 1), 6),
            **_details(enc),
        })
    return rows


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, nonzero parameters); tied parameters counted once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(int(torch.count_nonzero(p.detach())) for p in params)
