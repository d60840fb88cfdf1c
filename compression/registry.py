"""The allow-list of compression methods and the preset recipes.

Stage specs are only ever rebuilt through `STAGE_SPECS` (via pipeline.parse_pipeline);
adding a method means importing it here explicitly.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from compression.stage import CompressionState, MethodSpec
from compression.methods.compact_filters import CompactFiltersSpec, compact_filters
from compression.methods.distill import DistillSpec, distill
from compression.methods.entropy import HuffmanSpec, huffman_stage
from compression.methods.finetune import FinetuneSpec, finetune
from compression.methods.gptq import GPTQSpec, gptq
from compression.methods.int8 import Int8Spec, int8
from compression.methods.lowrank import LowRankSpec, low_rank
from compression.methods.pruning import PruneSpec, prune
from compression.methods.quantization import QuantizeSpec, quantize
from compression.methods.sharing import ShareSpec, share
from compression.methods.structured import StructuredPruneSpec, structured_prune
from compression.methods.structured_matrix import StructuredMatrixSpec, structured_matrix


@dataclass(frozen=True)
class Method:
    spec: type[MethodSpec]
    run: Callable[[MethodSpec, CompressionState], None]


METHODS: dict[str, Method] = {
    "quantize": Method(QuantizeSpec, quantize),
    "prune": Method(PruneSpec, prune),
    "share": Method(ShareSpec, share),
    "huffman": Method(HuffmanSpec, huffman_stage),
    "gptq": Method(GPTQSpec, gptq),
    "low_rank": Method(LowRankSpec, low_rank),
    "structured_prune": Method(StructuredPruneSpec, structured_prune),
    "structured_matrix": Method(StructuredMatrixSpec, structured_matrix),
    "compact_filters": Method(CompactFiltersSpec, compact_filters),
    "finetune": Method(FinetuneSpec, finetune),
    "distill": Method(DistillSpec, distill),
    "int8": Method(Int8Spec, int8),
}
STAGE_SPECS: tuple[type[MethodSpec], ...] = tuple(m.spec for m in METHODS.values())


def method_schemas() -> dict[str, dict]:
    """kind -> JSON Schema of its stage spec (descriptions, defaults, enums)."""
    return {kind: m.spec.model_json_schema() for kind, m in METHODS.items()}


def run_stage(spec: MethodSpec, state: CompressionState):
    return METHODS[spec.kind].run(spec, state)


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    stages: list[dict]


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("fp16", "Cast Linear/Conv/Embedding weights to float16 (~2x smaller, near-lossless).",
           [{"kind": "quantize", "dtype": "fp16"}]),
    Recipe("bf16", "Cast weights to bfloat16 (~2x smaller; float32 range, fewer mantissa bits).",
           [{"kind": "quantize", "dtype": "bf16"}]),
    Recipe("int8", "8-bit symmetric per-output-channel weight quantization (~4x smaller).",
           [{"kind": "quantize", "dtype": "int8", "granularity": "per_channel"}]),
    Recipe("int8-per-tensor", "8-bit symmetric weight quantization with one scale per tensor.",
           [{"kind": "quantize", "dtype": "int8", "granularity": "per_tensor"}]),
    Recipe("int4", "4-bit symmetric per-output-channel weight quantization (~7-8x smaller, lossy).",
           [{"kind": "quantize", "dtype": "int4", "granularity": "per_channel"}]),
    Recipe("int4-g64-huffman", "4-bit asymmetric codes with one float16 scale and zero point per 64 input "
                               "weights of each row, Huffman-coded (~7.5-8x smaller, data-free; a row's last "
                               "group may be shorter).",
           [{"kind": "quantize", "dtype": "int4", "group_size": 64, "symmetric": False}, {"kind": "huffman"}]),
    Recipe("fixed16", "16-bit fixed point (Qm.n, fractional bits chosen per tensor), ~2x smaller.",
           [{"kind": "quantize", "dtype": "fixed16"}]),
    Recipe("binary", "Binary weights: sign x mean|w| per output channel (XNOR-Net), ~32x smaller weights; "
                     "needs retraining to keep accuracy.",
           [{"kind": "quantize", "dtype": "binary"}]),
    Recipe("ternary", "Ternary weights {-a, 0, a} per output channel (TWN), 2 bits, Huffman-coded; "
                      "needs retraining to keep accuracy.",
           [{"kind": "quantize", "dtype": "ternary"}, {"kind": "huffman"}]),
    Recipe("prune-50", "Magnitude-prune 50% of each layer's weights; sparse storage with relative indices.",
           [{"kind": "prune", "sparsity": 0.5}]),
    Recipe("prune-90", "Magnitude-prune 90% of each layer's weights (lossy without retraining).",
           [{"kind": "prune", "sparsity": 0.9}]),
    Recipe("structured-50", "Structured pruning: remove half of each layer's channels/neurons (BERT-like models: "
                            "half of each FFN's neurons) by L1 norm; a smaller dense model with 2-4x fewer MACs, "
                            "lossy until fine-tuned.",
           [{"kind": "structured_prune", "ratio": 0.5}]),
    Recipe("kmeans-4bit", "Weight sharing: 16 k-means centroids per layer, 4-bit indices.",
           [{"kind": "share", "bits": 4}]),
    Recipe("deep-compression", "Deep Compression without retraining: magnitude-prune 80% per layer, "
                               "share 5-bit k-means centroids on the kept weights, Huffman-code indices "
                               "and gaps. Retrain (`finetune` after `prune` and after `share`, as in bench/deep_compression_service.py) for the paper's ratios.",
           [{"kind": "prune", "sparsity": 0.8},
            {"kind": "share", "bits": 5, "centroid_dtype": "float16", "bias_dtype": "float16"}, {"kind": "huffman"}]),
)}
