"""Bare safetensors weights plus a transformers config.json (no folder): the architecture is
whatever transformers builds from the config with its own code, never remote code."""
from __future__ import annotations

import json

import torch

from compression.formats import hf_folder
from compression.formats._errors import ModelFormatError
from compression.formats.summary import TensorMeta

MAX_CONFIG_BYTES = 256 << 10


def checked(config) -> dict:
    if not isinstance(config, dict) or len(json.dumps(config)) > MAX_CONFIG_BYTES:
        raise ModelFormatError(f"the transformers config must be a JSON object of at most {MAX_CONFIG_BYTES} bytes")
    return hf_folder.portable_config(hf_folder.check_config(config, "config"))


def _module(config: dict, device: str | None = None) -> torch.nn.Module:
    try:
        with torch.device(device or "cpu"):
            return hf_folder.module_from_config(config)
    except ModelFormatError:
        raise
    except Exception as exc:
        raise ModelFormatError(f"transformers cannot build a model from the config: {exc}"[:500]) from None


def check_tensors(tensors: list[TensorMeta], config: dict) -> list[TensorMeta]:
    """Names and shapes must be exactly the state_dict of the model the config describes."""
    expected = {n: tuple(t.shape) for n, t in _module(config, "meta").state_dict().items()}
    given = {t.name: t for t in tensors}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = [f"{n}: {list(given[n].shape)} (expected {list(s)})" for n, s in expected.items()
             if n in given and tuple(given[n].shape) != s]
    problems = [f"{label}: {', '.join(items[:5])}" + (f" and {len(items) - 5} more" if len(items) > 5 else "")
                for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
    if problems:
        raise ModelFormatError(f"weights do not fit the {config['model_type']} config: " + "; ".join(problems))
    return [given[n] for n in expected]


def build(tensors: dict[str, torch.Tensor], config: dict, seed: int) -> tuple[torch.nn.Module, tuple]:
    model = _module(config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, strict=True)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelFormatError(f"weights contain NaN or Inf values (tensor {name!r}); refused")
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int) or vocab < 2:
        raise ModelFormatError("the config has no vocab_size: cannot build sample inputs for a text model")
    ids = torch.randint(0, vocab, (hf_folder.SAMPLE_BATCH, hf_folder.RANDOM_SEQ_LEN),
                        generator=torch.Generator().manual_seed(seed))
    return model.float().eval(), (ids, torch.ones_like(ids))
