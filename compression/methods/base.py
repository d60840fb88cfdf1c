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

from compression.encoding import Encoded


class Phase(IntEnum):
    """Stages run in non-decreasing phase order. STRUCTURE (pruning) may repeat; VALUES
    (quantization, weight sharing, binarisation) and CODING (entropy coding) at most once each,
    so an entropy coder is always last."""
    STRUCTURE = 10
    VALUES = 20
    CODING = 30


EXCLUSIVE_PHASES = frozenset({Phase.VALUES, Phase.CODING})


class MethodSpec(BaseModel):
    """Base of every stage spec. Subclasses add `kind: Literal[...]` and their parameters."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    phase: ClassVar[Phase]

    def check_against(self, layer_names: list[str]) -> list[str]:
        """Problems visible from the model's tensor names alone (used at submit time)."""
        return []


@dataclass
class CompressionState:
    model: torch.nn.Module
    encodings: dict[str, Encoded] = field(default_factory=dict)   # state_dict name -> encoding; absent = raw
    seed: int = 0
    checkpoint: Callable[[float], None] = lambda fraction: None      # progress within the stage; may raise JobCancelled


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
