"""model-ct.zip: the compressed model as a Hugging Face folder in the `compressed-tensors` format
(llm-compressor's), which `transformers.AutoModel.from_pretrained(folder)` loads with the
`compressed-tensors` package installed and no modelpress code.

Linear weights the job left on a symmetric 4- or 8-bit grid (one scale per output channel or per group of
a row) are stored as that grid: packed integer codes and scales (`pack-quantized`), the job's own codes.
The format has no loadable form for other tensors' codes (Embedding quantization does not load in
transformers 5.24; asymmetric grids fail on the zero points' packed shape), so a tensor the job stored in at
most 8 bits per weight is written as float8 (e4m3), at most 16 bits as float16, anything else as it is;
transformers widens them to the model's dtype on load. The folder's own fidelity is measured, not assumed.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from compression.coding.encoding import Encoded, grid

CT_FOLDER_NAME = "model-ct.zip"
_WEIGHTS_DIR = "model"


def linear_grids(model: torch.nn.Module, encodings: dict[str, Encoded]) -> dict[str, dict]:
    """{Linear module name: {bits, group_size, scales}} for weights on a grid compressed-tensors stores exactly."""
    found = {}
    for name, module in model.named_modules():
        enc = encodings.get(f"{name}.weight")
        on_grid = grid(enc) if isinstance(module, torch.nn.Linear) and enc is not None else None
        if on_grid is None or on_grid.bits not in (4, 8) or not on_grid.symmetric or on_grid.zero_points is not None:
            continue
        gs, cols = on_grid.group_size, module.weight.shape[1]
        if gs is None and on_grid.axis != 0 or gs is not None and (gs >= cols or cols % gs):
            continue   # per-tensor, or a short last group: no compressed-tensors strategy says it
        found[name] = {"bits": on_grid.bits, "group_size": gs, "scales": torch.from_numpy(on_grid.scales)}
    return found


def _config(grids: dict[str, dict]):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

    groups: dict[tuple, list[str]] = {}
    for name, g in grids.items():
        groups.setdefault((g["bits"], g["group_size"]), []).append(f"re:^{re.escape(name)}$")
    schemes = {}
    for i, ((bits, gs), targets) in enumerate(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0))):
        args = QuantizationArgs(num_bits=bits, type="int", symmetric=True,
                                strategy="group" if gs else "channel", group_size=gs)
        schemes[f"group_{i}"] = QuantizationScheme(targets=targets, weights=args)
    return QuantizationConfig(config_groups=schemes, format="pack-quantized", quantization_status="initialized")


def _narrow(tensor: torch.Tensor, enc: Encoded | None) -> tuple[torch.Tensor, str]:
    """Other tensors: the narrowest float type transformers widens on load, no narrower than the job's own."""
    if enc is None or enc.codec == "raw" or not tensor.is_floating_point() or tensor.ndim < 2:
        return tensor, str(tensor.dtype).removeprefix("torch.")
    bits = enc.bits_per_element()
    if bits <= 8:
        return tensor.to(torch.float8_e4m3fn), "float8_e4m3fn"
    if bits <= 16:
        return tensor.to(torch.float16), "float16"
    return tensor, str(tensor.dtype).removeprefix("torch.")


def build_ct_folder(model: torch.nn.Module, encodings: dict[str, Encoded], hf_parts, folder: Path) -> dict:
    """Writes the folder (no model card yet). -> {"written", "linear_layers", "stored": {tensor: how, where not
    float32}} or {"written": False, "reason"}. `model`: the compressed HF model (decoded weights); `hf_parts`:
    the upload's config and tokenizer files."""
    import copy

    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import apply_quantization_config

    grids = linear_grids(model, encodings)
    if not grids:
        return {"written": False, "reason": "no Linear weight sits on a symmetric 4/8-bit grid (per channel or per "
                                            "group dividing the row): compressed-tensors has no exact loadable form "
                                            "for the others (a symmetric int4 quantize or gptq stage gives one)"}
    ct_model = copy.deepcopy(model).float().eval()
    apply_quantization_config(ct_model, _config(grids), show_progress=False)
    modules = dict(ct_model.named_modules())
    for name, g in grids.items():
        module = modules[name]
        module.weight_scale.data = g["scales"].reshape(module.weight_scale.shape).to(module.weight_scale.dtype)
        if hasattr(module, "weight_zero_point"):
            module.weight_zero_point.data.zero_()
    compressor = ModelCompressor.from_pretrained_model(ct_model, quantization_format="pack-quantized")
    compressor.compress_model(ct_model)
    state, stored = {}, {}
    for key, tensor in ct_model.state_dict().items():
        module_name, _, field = key.rpartition(".")
        if module_name in grids and field.startswith("weight_"):   # weight_packed / _scale / _shape
            state[key], stored[key] = tensor, "compressed-tensors pack-quantized"
        else:
            state[key], stored[key] = _narrow(tensor, encodings.get(key))
    ct_model.save_pretrained(str(folder), state_dict=state, safe_serialization=True)
    compressor.update_config(str(folder))
    for file_name, data in hf_parts.files.items():
        (folder / file_name).write_bytes(data)
    return {"written": True, "linear_weights": sorted(f"{n}.weight" for n in grids),
            "stored": {k: v for k, v in stored.items() if v not in ("float32", "compressed-tensors pack-quantized")}}


def zip_folder(folder: Path, out: Path) -> None:
    """Deterministic: fixed dates and order; the weights stored, text deflated."""
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            info = zipfile.ZipInfo(f"{_WEIGHTS_DIR}/{path.relative_to(folder)}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if path.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
            info.create_system, info.external_attr = 3, 0o644 << 16
            with open(path, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def load_folder(folder: Path) -> torch.nn.Module:
    """As a user loads it: transformers.AutoModel.from_pretrained (compressed-tensors decompresses at load).
    Only for folders a job wrote itself."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True).eval()


def load_ct_zip(path: Path) -> torch.nn.Module:
    with tempfile.TemporaryDirectory(prefix="modelpress-ct-") as tmp, zipfile.ZipFile(path) as zf:
        zf.extractall(tmp)
        return load_folder(Path(tmp) / _WEIGHTS_DIR)


def model_card(pipeline: dict, upload_bytes: int, folder_bytes: int, fidelity: dict, info: dict) -> str:
    kinds: dict[str, int] = {"packed integer codes + scales (compressed-tensors)": len(info["linear_weights"])}
    for how in info["stored"].values():
        kinds[how] = kinds.get(how, 0) + 1
    return ("---\nlibrary_name: transformers\ntags: [modelpress, compressed-tensors]\n---\n"
            "# Compressed with modelpress\n\n"
            "Load with no modelpress code: `pip install transformers compressed-tensors`, then "
            "`transformers.AutoModel.from_pretrained(\"<this folder>\")`.\n\n"
            f"- pipeline: `{json.dumps(pipeline.get('stages', []), separators=(',', ':'))}`\n"
            f"- size: {folder_bytes} bytes of weights, upload {upload_bytes} bytes "
            f"({upload_bytes / max(folder_bytes, 1):.2f}x smaller)\n"
            f"- stored: {', '.join(f'{n} tensors as {how}' for how, n in kinds.items())}; the rest float32\n"
            f"- measured on the job's example inputs against the uploaded model: {json.dumps(fidelity)}\n")
