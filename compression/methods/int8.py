"""int8 with real kernels: weights of Linear/Conv layers become int8 codes with one float32 scale per
output channel (symmetric), as the container stores them; activations are quantized at run time
(dynamic) or with ranges from calibration data (static) by the runnable int8 artifacts the job
writes beside it: model.int8.onnx (compression.job.int8_runtime: onnxruntime MatMulInteger/QLinearConv
kernels) and, dynamic Linear layers, model.int8.torchscript.pt (compression.job.int8_torch: torch's kernels).

The model keeps float weights equal to the decoded codes, so the container, safetensors and the
float programs verify unchanged; the int8 program requantizes them to the same codes."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from compression.coding.encoding import dtype_name
from compression.errors import CompressionError
from compression.stage import CompressionState, MethodSpec, Phase, encode_weight, pattern_matches, select_targets
from compression.methods.quantization import QuantizeSpec, _affine

_TYPES = {"Linear": ("Linear",), "Conv": ("Conv1d", "Conv2d", "Conv3d")}
_CODES = QuantizeSpec(kind="quantize", dtype="int8")   # per-channel symmetric int8, float32 scales


class Int8Spec(MethodSpec):
    """int8 weights (per-channel) plus programs with int8 kernels (model.int8.onnx, model.int8.torchscript.pt)."""
    phase = Phase.VALUES

    kind: Literal["int8"]
    mode: Literal["dynamic", "static"] = Field(
        "dynamic", description="dynamic: activation ranges computed per batch at run time (no data needed); "
                               "static: fixed activation ranges from the calibration data (faster, needs data)")
    layers: list[Literal["Linear", "Conv"]] = Field(default_factory=lambda: ["Linear", "Conv"], min_length=1,
                                                    max_length=2, description="layer types to quantize")
    exclude: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=256,
        description="glob patterns of layer or tensor names to keep in float32 in the container and in "
                    "model.int8.torchscript.pt (model.int8.onnx may still quantize them)")

    @property
    def needs_data(self) -> bool:
        return self.mode == "static"

    def check_against(self, layer_names: list[str]) -> list[str]:
        return [f"exclude pattern {p!r} matches no layer of the model"
                for p in self.exclude if not pattern_matches(p, layer_names)]

    def op_types(self) -> list[str]:
        """onnxruntime op types the int8 program quantizes."""
        return (["MatMul", "Gemm"] if "Linear" in self.layers else []) + (["Conv"] if "Conv" in self.layers else [])


def _selected(target, kinds: set[str]) -> bool:
    if target.module_type != "unknown":
        return target.module_type in kinds
    # program uploads have no module types: judge by weight rank (2: Linear, 3-5: Conv)
    return ("Linear" in kinds and target.param.ndim == 2) or ("Conv2d" in kinds and 3 <= target.param.ndim <= 5)


def int8(spec: Int8Spec, state: CompressionState) -> None:
    if spec.mode == "static" and not state.calibration:
        raise CompressionError("int8 static mode needs calibration data")
    kinds = {t for layer in spec.layers for t in _TYPES[layer]}
    chosen = [t for t in select_targets(state, spec.exclude, False, "int8") if _selected(t, kinds)]
    if not chosen:
        raise CompressionError(f"the int8 stage selects no {'/'.join(spec.layers)} weight")
    for i, target in enumerate(chosen):
        state.checkpoint(i / len(chosen))
        out_dtype = dtype_name(target.param.dtype)
        encode_weight(state, target, lambda w, o=out_dtype: _affine(w, _CODES, o), 8)
    state.checkpoint(1.0)
