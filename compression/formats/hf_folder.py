"""Hugging Face model folders uploaded as .zip / .tar.gz: config.json + model.safetensors
(+ optional tokenizer files), loaded with transformers without ever running repository code.

`scan` reads the archive once (archives.walk checks every member): config.json and the
safetensors header in sniff, plus a copy of the needed members to a scratch folder in load.
Only members at the top level or in one top folder count; members are written to fixed
names we choose, never to the member's own path. trust_remote_code is never set, and configs
asking for custom code (`auto_map`) are refused up front.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from compression.formats import archives, safetensors_file
from compression.formats._errors import ModelFormatError
from compression.formats.inputs import SAMPLE_BATCH
from compression.formats.limits import MAX_CONFIG_BYTES, MAX_TOKENIZER_BYTES
from compression.formats.summary import TensorMeta, build_summary

HF_FOLDER = "hf-folder"
CONFIG, WEIGHTS = "config.json", "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "added_tokens.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
_NEEDED = (CONFIG, WEIGHTS, *TOKENIZER_FILES)
# fixed sentences: sample inputs are the same for every job, so metrics are comparable across runs
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Model compression makes neural networks smaller and faster.",
    "A self-hosted service quantizes and prunes PyTorch models.",
    "It rained all day, so we stayed inside and read books.",
    "How many parameters does this transformer have?",
    "Paris is the capital and most populous city of France.",
    "Sentence embeddings map text to vectors that capture meaning.",
    "Short text.",
)
RANDOM_SEQ_LEN = 32


@dataclass
class HFParts:
    """What the exported folder needs besides the weights: the checked config and tokenizer files."""
    config: dict
    files: dict[str, bytes] = field(default_factory=dict)   # tokenizer files, as uploaded


@dataclass
class _Scan:
    config: dict
    metas: list[TensorMeta]
    weights_bytes: int
    tokenizer: list[str]
    folder: Path | None = None   # the extracted model folder (load only)


def _find_auto_map(obj, depth: int = 0) -> bool:
    if depth > 8:
        return False
    if isinstance(obj, dict):
        return "auto_map" in obj or any(_find_auto_map(v, depth + 1) for v in obj.values())
    if isinstance(obj, list):
        return any(_find_auto_map(v, depth + 1) for v in obj)
    return False


def _json(data: bytes, name: str) -> dict:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{name} must be a JSON object")
    return obj


def check_config(config, name: str = CONFIG) -> dict:
    """A config transformers can build from its own code: known model_type, no custom code."""
    if not isinstance(config, dict):
        raise ModelFormatError(f"{name} must be a JSON object")
    if _find_auto_map(config):
        raise ModelFormatError(f"{name} asks for custom model code (auto_map); modelpress never runs code from "
                               "uploads (trust_remote_code is off). Use a model type built into transformers")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING_NAMES:
        raise ModelFormatError(f"{name}: model_type {model_type!r} is not a model type built into transformers")
    archs = config.get("architectures", [])
    if archs is not None and not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
        raise ModelFormatError(f"{name}: 'architectures' must be a list of class names")
    return config


def portable_config(config: dict) -> dict:
    """The config as exported: weights are float32, whatever dtype the upload declared."""
    return {k: v for k, v in config.items() if k not in ("torch_dtype", "dtype", "_name_or_path")}


def is_hf_zip(path: Path) -> bool:
    """A zip with config.json at the top level or in one top folder (torch archives never have one)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False
    return any(n.rsplit("/", 1)[-1] == CONFIG and n.strip("/").count("/") <= 1 for n in names)


def scan(path: Path, kind: str, dest: Path | None = None) -> _Scan:
    """One pass over the archive. With `dest`, needed members are copied to dest/<slot>/<basename>."""
    found: dict[str, dict[str, archives.Member | bytes | list]] = {}   # folder -> what it holds
    slots: dict[str, Path] = {}
    other_weights = set()
    for member in archives.walk(path, kind):
        folder, _, base = member.name.rpartition("/")
        if "/" in folder or base not in _NEEDED:
            if base in ("pytorch_model.bin", "model.safetensors.index.json", "tf_model.h5", "flax_model.msgpack"):
                other_weights.add(base)
            continue
        entry = found.setdefault(folder, {})
        if base in entry.get("present", []):
            raise ModelFormatError(f"archive member {member.name!r} appears twice")
        source = member
        if dest is not None:   # tar streams cannot be re-read: copy first, then read the copy
            if folder not in slots:
                slots[folder] = dest / f"slot{len(slots)}"
                slots[folder].mkdir()
            if base in (CONFIG, "tokenizer_config.json") and member.size > MAX_CONFIG_BYTES:
                raise ModelFormatError(f"{member.name!r} is too large ({member.size} > {MAX_CONFIG_BYTES} bytes)")
            archives.copy_member(member, slots[folder] / base)
            source = archives.Member(member.name, member.size, lambda p=slots[folder] / base: open(p, "rb"))
        if base in (CONFIG, "tokenizer_config.json"):
            entry[base] = archives.read_member(source, MAX_CONFIG_BYTES)
        elif base == WEIGHTS:
            with source.open() as f:
                entry["metas"] = safetensors_file.parse_header(f, member.size)
            entry["weights_bytes"] = member.size
        entry.setdefault("present", []).append(base)
    roots = [f for f, e in found.items() if CONFIG in e]
    if len(roots) > 1:   # sentence-transformers folders also hold 1_Pooling/config.json
        with_weights = [f for f in roots if WEIGHTS in found[f].get("present", [])]
        roots = with_weights or sorted(roots, key=lambda f: (f != "", f))[:1]
    if not roots:
        raise ModelFormatError("archive has no config.json at its top level or in one top folder; upload a "
                               "Hugging Face model folder (config.json + model.safetensors) as .zip or .tar.gz")
    if len(roots) > 1:
        raise ModelFormatError(f"archive holds more than one model folder ({', '.join(r or '.' for r in roots)})")
    entry = found[roots[0]]
    if WEIGHTS not in entry["present"]:
        if "model.safetensors.index.json" in other_weights:
            why = "sharded safetensors checkpoints are not supported yet"
        elif other_weights:
            why = f"only safetensors weights are loaded (found {', '.join(sorted(other_weights))}; pickle-based " \
                  "pytorch_model.bin is never unpickled)"
        else:
            why = "it is missing"
        raise ModelFormatError(f"the model folder needs model.safetensors: {why}")
    config = check_config(_json(entry[CONFIG], CONFIG))
    if "tokenizer_config.json" in entry:
        check_tokenizer_config(_json(entry["tokenizer_config.json"], "tokenizer_config.json"))
    tokenizer = sorted(b for b in entry["present"] if b in TOKENIZER_FILES)
    return _Scan(config, entry["metas"], entry["weights_bytes"], tokenizer, slots.get(roots[0]))


def check_tokenizer_config(obj: dict) -> None:
    if _find_auto_map(obj):
        raise ModelFormatError("tokenizer_config.json asks for custom tokenizer code (auto_map); refused")


def sniff_archive(path: Path, kind: str) -> dict:
    found = scan(path, kind)
    config = found.config
    metas = [TensorMeta(m.name, m.shape, m.dtype, m.dtype.startswith(("float", "bfloat")))
             for m in found.metas]   # integer buffers (position_ids) are not parameters
    summary = build_summary(metas, None, model_type=config["model_type"],
                            architectures=config.get("architectures") or [],
                            layers_count=config.get("num_hidden_layers") or config.get("n_layer"),
                            hidden_size=config.get("hidden_size"), vocab_size=config.get("vocab_size"),
                            tokenizer=found.tokenizer, weights_bytes=found.weights_bytes,
                            # names in the file may carry a prefix (e.g. "bert.") that loading strips,
                            # so the API does not check pipeline patterns against them; the worker does
                            layers_complete=False)
    return summary


# ---- loading (worker) ------------------------------------------------------------------------

def _from_pretrained(folder: Path) -> torch.nn.Module:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True,
                                          dtype=torch.float32)
    except Exception as exc:
        raise ModelFormatError(f"transformers could not load the model: {type(exc).__name__}: {exc}"[:600]) from None
    model = model.float().eval()
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelFormatError(f"weights contain NaN or Inf values (tensor {name!r}); refused")
    return model


def _sample_inputs(folder: Path, config: dict, tokenizer_files: list[str], seed: int) -> tuple:
    if tokenizer_files:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token or tok.unk_token
            enc = tok(list(SENTENCES), padding=True, truncation=True, max_length=128, return_tensors="pt")
            return enc["input_ids"], enc["attention_mask"]
        except Exception:   # an unusual tokenizer: fall back to random ids (still a valid check)
            pass
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int) or vocab < 2:
        raise ModelFormatError("config.json has no vocab_size and no usable tokenizer: cannot build sample inputs")
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (SAMPLE_BATCH, RANDOM_SEQ_LEN), generator=gen)
    return ids, torch.ones_like(ids)


def load_tokenizer(parts: HFParts):
    """The upload's own tokenizer (for text datasets), or None when the folder had none."""
    if not any(name in parts.files for name in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="mp-tok-") as tmp:
        folder = Path(tmp)
        (folder / CONFIG).write_text(json.dumps(parts.config))
        for name, data in parts.files.items():
            (folder / name).write_bytes(data)
        try:
            tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        except Exception as exc:
            raise ModelFormatError(f"the model's tokenizer could not be loaded: {type(exc).__name__}: {exc}"[:500]) \
                from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def load_archive(path: Path, kind: str, seed: int = 0) -> tuple[torch.nn.Module, tuple, HFParts, int]:
    """-> (model, sample inputs, config + tokenizer files, bytes of model.safetensors)."""
    with tempfile.TemporaryDirectory(prefix="modelpress-hf-") as tmp:
        found = scan(path, kind, Path(tmp))
        folder = found.folder
        safetensors_file.read_header(folder / WEIGHTS)
        model = _from_pretrained(folder)
        inputs = _sample_inputs(folder, found.config, found.tokenizer, seed)
        files, total = {}, 0
        for name in found.tokenizer:
            data = (folder / name).read_bytes()
            total += len(data)
            if total > MAX_TOKENIZER_BYTES:
                raise ModelFormatError(f"tokenizer files are larger than {MAX_TOKENIZER_BYTES} bytes")
            files[name] = data
    return model, inputs, HFParts(portable_config(found.config), files), found.weights_bytes


def sentence_embeddings(model: torch.nn.Module, inputs: tuple) -> torch.Tensor:
    """What jobs compare for HF models: attention-mask mean-pooled last_hidden_state, L2-normalised
    ([batch, hidden] float64), i.e. sentence-transformers embeddings; cosine of rows = their similarity."""
    input_ids, mask = inputs
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=mask)
    hidden = None
    if isinstance(out, dict) or hasattr(out, "keys"):
        hidden = out.get("last_hidden_state")
    if hidden is None:
        hidden = out[0] if isinstance(out, (tuple, list)) or hasattr(out, "to_tuple") else out
    if not isinstance(hidden, torch.Tensor):
        raise ModelFormatError("the model returned no hidden states")
    hidden = hidden.detach().double()
    if hidden.ndim == 3:
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    else:
        pooled = hidden.reshape(hidden.shape[0], -1)
    return F.normalize(pooled, dim=-1, eps=1e-12)


def module_from_config(config) -> torch.nn.Module:
    """An (untrained) model from a checked config, with transformers' own code only."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoConfig, AutoModel

    config = dict(check_config(config))
    cfg = AutoConfig.for_model(config.pop("model_type"), **config)
    return AutoModel.from_config(cfg, trust_remote_code=False).float().eval()


def write_folder_zip(path: Path, weights_file: Path, parts: HFParts) -> None:
    """The dense runnable folder: config.json, model.safetensors and the uploaded tokenizer files;
    deterministic (fixed dates/order), weights stored, text deflated."""
    def member(zf, name, data, compress):
        info = zipfile.ZipInfo(f"model/{name}", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.create_system, info.external_attr = 3, 0o644 << 16
        zf.writestr(info, data)

    with zipfile.ZipFile(path, "w") as zf:
        member(zf, CONFIG, json.dumps(parts.config, indent=2, sort_keys=True).encode(), True)
        for name in sorted(parts.files):
            member(zf, name, parts.files[name], True)
        info = zipfile.ZipInfo(f"model/{WEIGHTS}", date_time=(1980, 1, 1, 0, 0, 0))
        info.create_system, info.external_attr = 3, 0o644 << 16
        with open(weights_file, "rb") as src, zf.open(info, "w", force_zip64=True) as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)


def container_module(config) -> torch.nn.Module:
    """For load_container_module: the model an hf-folder container's manifest describes."""
    from compression.coding.container import ContainerError

    try:
        return module_from_config(config)
    except ModelFormatError as exc:
        raise ContainerError(f"manifest origin.hf_config refused: {exc.message}") from None
    except Exception as exc:
        raise ContainerError(f"transformers cannot build the model from origin.hf_config: {exc}"[:500]) from None
