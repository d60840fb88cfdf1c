"""What every compression method shares: the spec base class, pipeline phases, and the
state a stage works on (the model plus per-tensor encodings)."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from fnmatch import fnmatchcase
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict

from compression.data.tensor_data import JobData
from compression.coding.encoding import Encoded, Part
from compression.errors import CompressionError


class Phase(IntEnum):
    """Stages run in non-decreasing phase order. ARCHITECTURE (structured pruning, low-rank
    factorization, student derivation) and STRUCTURE (unstructured pruning) may repeat; VALUES
    (quantization, weight sharing, binarisation) and CODING (entropy coding) at most once each,
    so an entropy coder is always last. TRAINING stages (fine-tuning) may go anywhere."""
    TRAINING = 0
    ARCHITECTURE = 5
    STRUCTURE = 10
    VALUES = 20
    CODING = 30


EXCLUSIVE_PHASES = frozenset({Phase.VALUES, Phase.CODING})


class MethodSpec(BaseModel):
    """Base of every stage spec. Subclasses add `kind: Literal[...]` and their parameters."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    phase: ClassVar[Phase]
    trains: ClassVar[bool] = False   # runs with autograd enabled (fine-tuning, distillation)
    # swaps whole layers for others with the same inputs and outputs, so it also works inside a torch.export
    # program's fixed graph (its layers are lifted to modules); other architecture changes cannot
    swaps_layers: ClassVar[bool] = False

    def check_against(self, layer_names: list[str]) -> list[str]:
        """Problems visible from the model's tensor names alone (used at submit time)."""
        return []

    def check_module_types(self, types: dict[str, str]) -> list[str]:
        """Problems visible from the inspected model's module types (module name -> class name)."""
        return []

    @property
    def needs_data(self) -> bool:
        """True when the stage cannot run without calibration batches."""
        return False


@dataclass
class CompressionState:
    model: torch.nn.Module
    encodings: dict[str, Encoded] = field(default_factory=dict)   # state_dict name -> encoding; absent = raw
    seed: int = 0
    checkpoint: Callable[[float], None] = lambda fraction: None      # progress within the stage; may raise JobCancelled
    masks: dict[str, torch.Tensor] = field(default_factory=dict)     # pruned tensors: bool keep-mask, persists
    calibration: list[tuple] | None = None   # batches (inputs..., [int targets]) for data-driven criteria
    data: JobData | None = None              # the job's datasets by role (calibration, train, eval)
    example_inputs: tuple = ()               # sample inputs the model runs on (tracing, MACs)
    # (model, inputs) -> [batch, features] outputs that fidelity is measured on (None: outputs.run)
    probe: Callable[[torch.nn.Module, tuple], torch.Tensor] | None = None
    teacher: torch.nn.Module | None = None   # the uploaded model, untouched (distillation, evaluation)
    structure: list[dict] = field(default_factory=list)   # architecture edits (compression.formats.structure)
    # training stages: durable checkpoints (the job scopes names per stage) and per-epoch records
    save_checkpoint: Callable[[str, bytes], None] = lambda name, payload: None
    load_checkpoint: Callable[[str], bytes | None] = lambda name: None
    log: Callable[[dict], None] = lambda record: None


@dataclass(frozen=True)
class WeightTarget:
    name: str          # state_dict name, e.g. "fc1.weight"
    module_name: str   # e.g. "fc1"
    module_type: str   # "Linear", "Conv2d", "Embedding", ... or "unknown"
    param: torch.nn.Parameter


def module_name(tensor_name: str) -> str:
    return tensor_name.rpartition(".")[0]


def pattern_matches(pattern: str, names: Iterable[str]) -> bool:
    """A pattern matches a tensor by its own name or by its module's name."""
    return any(fnmatchcase(n, pattern) or fnmatchcase(module_name(n), pattern) for n in names)


def _module_types(model: torch.nn.Module) -> dict[str, str]:
    """module name -> layer type; TorchScript keeps `original_name`, exported graphs keep the ops."""
    types = {name: getattr(mod, "original_name", None) or type(mod).__name__ for name, mod in model.named_modules()}
    graph = getattr(model, "graph", None)
    if isinstance(graph, torch.fx.Graph):   # unlifted torch.export module: find embedding weights by op
        for node in graph.nodes:
            if node.op == "call_function" and node.target is torch.ops.aten.embedding.default \
                    and getattr(node.args[0], "op", None) == "get_attr":
                types[module_name(node.args[0].target)] = "Embedding"
    return types


def weight_targets(model: torch.nn.Module) -> list[WeightTarget]:
    """Weights of Linear/Conv/Embedding-like layers: floating parameters named "weight" with
    two or more dimensions (biases and normalisation scales are 1-D)."""
    types = _module_types(model)
    targets = []
    for name, param in model.named_parameters():
        if name.rpartition(".")[2] == "weight" and param.ndim >= 2 and param.is_floating_point():
            mod = module_name(name)
            targets.append(WeightTarget(name, mod, types.get(mod, "unknown"), param))
    return targets


def select_targets(state: CompressionState, exclude: list[str], include_embeddings: bool, kind: str
                   ) -> list[WeightTarget]:
    """Weights a stage works on: weight_targets minus `exclude` (each pattern must match a layer)."""
    names = list(state.model.state_dict().keys())
    for p in exclude:
        if not pattern_matches(p, names):
            raise CompressionError(f"exclude pattern {p!r} matches no layer of the model")
    chosen = [t for t in weight_targets(state.model)
              if not any(pattern_matches(p, [t.name]) for p in exclude)
              and (include_embeddings or t.module_type != "Embedding")]
    if not chosen:
        raise CompressionError(f"the {kind} stage selects no Linear/Conv/Embedding weight")
    return chosen


def require_replaceable_layers(state: CompressionState, kind: str) -> None:
    """Stages that swap layers (low_rank, structured_matrix, compact_filters) run first, on a module whose
    layers are modules: eager models and torch.export programs (lifted), not TorchScript."""
    if state.encodings:
        raise CompressionError(f"{kind} must run before any stage that encodes weights (quantize, share, prune)")
    if isinstance(state.model, torch.jit.ScriptModule):
        raise CompressionError(f"{kind} replaces layers: a TorchScript program cannot be restructured (export it "
                               "with torch.export instead, or upload weights + architecture)")


def modules_to_replace(model: torch.nn.Module, layers: list[str], exclude: list[str],
                       eligible: Callable[[torch.nn.Module], bool]) -> list[tuple[str, torch.nn.Module]]:
    """Eligible modules named by `layers` (all when empty) and not by `exclude` (glob patterns)."""
    def wanted(name: str) -> bool:
        return (not layers or any(fnmatchcase(name, p) for p in layers)) \
            and not any(fnmatchcase(name, p) for p in exclude)
    return [(name, mod) for name, mod in model.named_modules() if eligible(mod) and wanted(name)]


def check_finite(name: str, w: torch.Tensor) -> None:
    if not torch.isfinite(w).all():
        raise CompressionError(f"{name} holds NaN or infinite values")


def _fixed_gap_bits(hist) -> float:
    return float(hist.sum()) * (len(hist).bit_length() - 1)


def sparse_node(w: torch.Tensor, mask: torch.Tensor, encode_entries: Callable[[torch.Tensor], Encoded | Part],
                value_bits: float, index_bits: int | None = None) -> Encoded:
    """Relative-index sparse node: gaps (bit-packed) + one value per entry, encoded by `encode_entries`
    (a flat tensor of the kept values, zeros at filler entries). Gap width minimises the stored bits."""
    from mpclient.format import sparse_index
    from compression.coding.encoding import bitpacked, dtype_name
    from mpclient.format.codecs import sparse
    m = mask.reshape(-1).numpy()
    if index_bits is None:
        index_bits, _ = sparse_index.choose_bits(m, value_bits, candidates=range(2, 13), estimator=_fixed_gap_bits)
    flat = w.detach().reshape(-1)
    if flat.dtype in (torch.bfloat16, torch.float16):   # numpy has no bfloat16; widening is exact
        flat = flat.float()
    gaps, entries = sparse_index.encode(flat.numpy(), m, index_bits)
    values = encode_entries(torch.from_numpy(entries.copy()))
    return sparse.encode(tuple(w.shape), dtype_name(w.dtype), bits=index_bits, values=values,
                         gaps=bitpacked(gaps, index_bits, "uint8" if index_bits <= 8 else "int32"))


def encode_weight(state: CompressionState, target: WeightTarget, encode_values: Callable[[torch.Tensor], Encoded | Part],
                  value_bits: float) -> Encoded:
    """Encode a weight's values; a pruned weight keeps its mask (a sparse node around the values),
    so zeros stay zero. Sets the parameter to the decoded tensor and records the encoding."""
    from compression.coding.encoding import decode
    existing = state.encodings.get(target.name)
    mask = state.masks.get(target.name)
    if existing is not None and not (mask is not None and existing.codec == "sparse"):
        raise CompressionError(f"{target.name} is already encoded by an earlier stage")
    w = target.param.detach()
    check_finite(target.name, w)
    if mask is None:
        enc = encode_values(w)
    else:
        enc = sparse_node(w, mask, encode_values, value_bits)
    with torch.no_grad():
        target.param.copy_(decode(enc))   # the model holds exactly what the container will decode
    state.encodings[target.name] = enc
    return enc
