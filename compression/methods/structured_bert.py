"""BERT-like encoders under structured pruning: which heads Torch-Pruning may remove, which layers
keep the hidden width, and the attention sizes that forward() reads after heads are gone.

Only heads (query/key/value rows with the attention output's columns) and FFN neurons
(intermediate rows with the FFN output's columns) are removed; the hidden width stays, because
it is the model's output width (embeddings users compare) and is shared by every residual."""
from __future__ import annotations

from torch import nn

from compression.errors import CompressionError


def is_hf(model: nn.Module) -> bool:
    return type(model).__module__.startswith("transformers.")


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """name -> self-attention module holding query/key/value Linears and `num_attention_heads`."""
    found = {n: m for n, m in model.named_modules()
             if isinstance(getattr(m, "num_attention_heads", None), int)
             and all(isinstance(getattr(m, p, None), nn.Linear) for p in ("query", "key", "value"))}
    if not found:
        raise CompressionError("structured pruning of Hugging Face models supports BERT-style encoders "
                               "(self-attention with query/key/value layers); none found in this model")
    return found


def hidden_width_layers(model: nn.Module, attention: dict[str, nn.Module]) -> list[nn.Module]:
    """Layers whose output width is the hidden size (embeddings, attention/FFN outputs, LayerNorms,
    pooler): ignoring them keeps every hidden-width group out of Torch-Pruning's reach."""
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    if not isinstance(hidden, int):
        raise CompressionError("the model's config has no hidden_size")
    qkv = {id(getattr(a, p)) for a in attention.values() for p in ("query", "key", "value")}
    out = []
    for m in model.modules():
        if id(m) in qkv or list(m.children()):
            continue
        width = m.out_features if isinstance(m, nn.Linear) else m.embedding_dim if isinstance(m, nn.Embedding) \
            else m.normalized_shape[-1] if isinstance(m, nn.LayerNorm) else None
        if width == hidden:
            out.append(m)
    return out


def head_options(attention: dict[str, nn.Module], heads_ratio: float) -> dict:
    num_heads = {getattr(a, p): a.num_attention_heads for a in attention.values() for p in ("query", "key", "value")}
    return {"num_heads": num_heads, "prune_num_heads": heads_ratio > 0, "prune_head_dims": False,
            "head_pruning_ratio": heads_ratio}


def head_gates(attention: dict[str, nn.Module], heads_ratio: float) -> dict[nn.Module, float]:
    """Torch-Pruning 1.6.1 removes heads only inside a scope whose width ratio prunes something;
    with head dims kept (prune_head_dims=False) that ratio removes nothing else, so each attention
    group gets a positive one, whatever the FFN ratio is."""
    return {a.query: 0.5 for a in attention.values()} if heads_ratio > 0 else {}


def record_heads(model: nn.Module, pruner, edits: list[dict]) -> dict[str, int]:
    """Sets the sizes forward() reads from the pruned projections and records them as set_attrs."""
    kept = {}
    for name, a in attention_modules(model).items():
        heads = pruner.num_heads.get(a.query, a.num_attention_heads)
        size = a.query.out_features
        if heads < 1 or size % heads or size // heads != a.attention_head_size:
            raise CompressionError(f"{name}: inconsistent heads after pruning ({size} features, {heads} heads)")
        if heads != a.num_attention_heads or size != a.all_head_size:
            a.num_attention_heads, a.all_head_size = heads, size
            edits.append({"op": "set_attrs", "module": name,
                          "attrs": {"num_attention_heads": heads, "all_head_size": size}})
        kept[name] = heads
    return kept

