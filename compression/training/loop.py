"""The training loop shared by the finetune and distill stages: epochs over `state.data.train`,
early stopping on the eval score, a safetensors checkpoint after every epoch (resume continues
from it), progress and per-epoch log records through the state's hooks.

Hooks (set by the job; defaults do nothing, read with getattr so a plain CompressionState works):
  state.save_checkpoint(name: str, payload: bytes) -> None
  state.load_checkpoint(name: str) -> bytes | None
  state.log(record: dict) -> None
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn
from torch.func import functional_call

from compression.errors import CompressionError
from compression.data.evaluation import evaluate, outputs
from compression.stage import CompressionState, MethodSpec
from compression.training.weights import TrainableWeights

Loss = Literal["auto", "ce", "kl", "mse", "cosine"]


class TrainingSpec(MethodSpec):
    """Options every training stage shares."""
    trains = True

    epochs: int = Field(3, ge=1, le=1000, description="passes over the training data")
    lr: float | None = Field(None, gt=0, le=1.0, description="Adam learning rate; default 1e-3, "
                                                            "1e-4 for Hugging Face models")
    batch_size: int = Field(32, ge=1, le=4096)
    weight_decay: float = Field(0.0, ge=0, le=1.0)
    patience: int | None = Field(2, ge=1, le=100, description="stop after this many epochs without a better eval "
                                 "score (needs eval data; the best epoch's weights and batch-norm statistics are "
                                 "kept); null: train every epoch and keep the last (eval data then only reports)")
    max_steps: int | None = Field(None, ge=1, le=10_000_000, description="stop after this many optimizer steps")
    max_seconds: float | None = Field(None, gt=0, le=30 * 86400, description="stop after this many seconds "
                                      "of training in this run (checked after every step; the epoch in progress "
                                      "is then evaluated as the last one); null: no time limit")
    temperature: float = Field(2.0, gt=0, le=100, description="kl loss: softmax temperature of soft targets")
    alpha: float = Field(0.5, ge=0, le=1, description="kl loss with labels: weight of the hard-label "
                                                      "cross-entropy (1 - alpha on the soft targets)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available")

    @property
    def needs_data(self) -> bool:
        return True


def _hook(state: CompressionState, name: str) -> Callable:
    defaults = {"save_checkpoint": lambda name, payload: None, "load_checkpoint": lambda name: None,
                "log": lambda record: None}
    return getattr(state, name, None) or defaults[name]


def is_hf(state: CompressionState) -> bool:
    return state.probe is not None   # Hugging Face folders come with the sentence-embedding probe


def pooled_embeddings(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Differentiable twin of hf_folder.sentence_embeddings: masked mean pool, L2-normalised."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return F.normalize((hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0), dim=-1, eps=1e-12)


def forward(model: nn.Module, inputs: tuple, hf: bool, hidden: bool = False,
            params: dict | None = None) -> tuple[torch.Tensor, tuple | None]:
    """(outputs [batch, features], hidden states or None); `params` overrides the model's weights."""
    call = (lambda *a, **k: functional_call(model, params, a, k)) if params is not None else model
    if hf:
        out = call(input_ids=inputs[0], attention_mask=inputs[1], output_hidden_states=hidden)
        return pooled_embeddings(out[0], inputs[1]), (out.hidden_states if hidden else None)
    out = call(*inputs)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out.reshape(out.shape[0], -1), None


def resolve_loss(loss: Loss, state: CompressionState, labelled: bool, default_unlabelled: Loss) -> Loss:
    if loss == "auto":
        return "cosine" if is_hf(state) else "ce" if labelled else default_unlabelled
    if loss == "ce" and not labelled:
        raise CompressionError("the ce loss needs labelled training data")
    return loss


def task_loss(loss: Loss, spec: TrainingSpec, out: torch.Tensor, target: torch.Tensor | None,
              labels: torch.Tensor | None) -> torch.Tensor:
    if loss == "ce":
        return F.cross_entropy(out, labels)
    if loss == "mse":
        return F.mse_loss(out, target)
    if loss == "cosine":
        return 1 - F.cosine_similarity(out, target, dim=1).mean()
    t = spec.temperature   # Hinton et al.: T^2 keeps soft-target gradients comparable across temperatures
    soft = F.kl_div(F.log_softmax(out / t, 1), F.log_softmax(target / t, 1), reduction="batchmean",
                    log_target=True) * t * t
    return soft if labels is None else spec.alpha * F.cross_entropy(out, labels) + (1 - spec.alpha) * soft


def device_for(spec: TrainingSpec) -> torch.device:
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise CompressionError("device cuda requested but CUDA is not available")
    return torch.device("cuda" if spec.device != "cpu" and torch.cuda.is_available() else "cpu")


class _Functional(nn.Module):
    """Runs the model on the trainable weights' current values (for evaluation probes)."""

    def __init__(self, model: nn.Module, weights: TrainableWeights):
        super().__init__()
        self.inner, self._weights = model, weights

    def forward(self, *args, **kwargs):
        return functional_call(self.inner, self._weights.current(), args, kwargs)


_BUFFER = "buffer:"


def _snapshot(weights: TrainableWeights, model: nn.Module) -> dict[str, torch.Tensor]:
    """An epoch's state to return to: trained leaves and module buffers (batch norm's running statistics move
    every training step; weights of one epoch with the statistics of another are a different model)."""
    snap = {k: v.detach().clone() for k, v in weights.leaves.items()}
    return snap | {f"{_BUFFER}{k}": v.detach().clone() for k, v in model.named_buffers()}


def _payload(weights: TrainableWeights, model: nn.Module, opt, meta: dict, best: dict | None) -> bytes:
    tensors = {f"leaf/{k}": v.detach().cpu().contiguous() for k, v in weights.leaves.items()}
    tensors |= {f"buffer/{k}": v.detach().cpu().contiguous() for k, v in model.named_buffers()}
    names = list(weights.leaves)
    for i, s in opt.state_dict()["state"].items():
        tensors |= {f"opt/{names[i]}/{k}": torch.as_tensor(v).cpu().contiguous() for k, v in s.items()}
    tensors |= {f"best/{k}": v.cpu().contiguous() for k, v in (best or {}).items()}
    tensors |= {f"meta/{k}": torch.tensor(float(v), dtype=torch.float64) for k, v in meta.items()}
    return st_save(tensors)


def _restore(payload: bytes, weights: TrainableWeights, model: nn.Module, opt) -> tuple[dict, dict | None]:
    tensors = st_load(payload)
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for key, t in tensors.items():
            group, _, name = key.partition("/")
            if group == "leaf" and name in weights.leaves:
                weights.leaves[name].copy_(t)
            elif group == "buffer" and name in buffers:
                buffers[name].copy_(t)
    names = list(weights.leaves)
    state = {}
    for key, t in tensors.items():
        if key.startswith("opt/"):
            name, _, field = key[4:].rpartition("/")
            state.setdefault(names.index(name), {})[field] = t.to(weights.leaves[name].device) \
                if field != "step" else t
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    best = {k[5:]: t for k, t in tensors.items() if k.startswith("best/")} or None
    return {k[5:]: float(t) for k, t in tensors.items() if k.startswith("meta/")}, best


def _trim(batch: tuple) -> tuple:
    """Drops token columns that are padding in every row (exact: masked positions do not count)."""
    ids, mask, *rest = batch
    used = mask.any(0).nonzero()
    n = int(used.max()) + 1 if len(used) else mask.shape[1]
    return (ids[:, :n], mask[:, :n], *rest)


def fit(spec: TrainingSpec, state: CompressionState, model: nn.Module, weights: TrainableWeights,
        batch_loss: Callable[[nn.Module, dict, tuple], torch.Tensor], name: str,
        progress: Callable[[float], None] | None = None) -> dict:
    """Trains `weights` (leaves of `model`) for spec.epochs on state.data.train with `batch_loss(model,
    params, batch)`; returns {"epochs": done, "best": eval metrics or None}. Model and teacher are moved
    to the device for the run and back to the CPU after."""
    progress = progress or state.checkpoint
    save, load, log = _hook(state, "save_checkpoint"), _hook(state, "load_checkpoint"), _hook(state, "log")
    train, evals = state.data.train, state.data.eval
    device, hf = device_for(spec), is_hf(state)
    lr = spec.lr or (1e-4 if hf else 1e-3)
    model.to(device)
    weights.to(device)
    if state.teacher is not None:
        state.teacher.to(device)
    opt = torch.optim.Adam(list(weights.leaves.values()), lr=lr, weight_decay=spec.weight_decay)
    reference = outputs(state.teacher, evals, state.probe, device=device) if evals and state.teacher else None
    meta, best = {"epoch": 0, "step": 0, "best_score": float("-inf"), "bad": 0}, None
    payload = load(name)
    if payload:
        loaded, best = _restore(payload, weights, model, opt)
        meta.update(loaded)
    steps_per_epoch = -(-len(train) // spec.batch_size)
    last, started = None, time.monotonic()

    def out_of_time() -> bool:
        return spec.max_seconds is not None and time.monotonic() - started >= spec.max_seconds
    try:
        while meta["epoch"] < spec.epochs and not (spec.max_steps and meta["step"] >= spec.max_steps):
            epoch, total, count = int(meta["epoch"]), 0.0, 0
            model.train()
            for i, batch in enumerate(train.batches(spec.batch_size, shuffle=True, seed=state.seed + epoch)):
                batch = tuple(t.to(device) for t in (_trim(batch) if hf else batch))
                opt.zero_grad(set_to_none=True)
                loss = batch_loss(model, weights.current(), batch)
                if not torch.isfinite(loss):
                    raise CompressionError(f"{name}: the training loss became {loss.item()}; lower the learning rate")
                loss.backward()
                weights.before_step()
                opt.step()
                weights.after_step()
                total, count, meta["step"] = total + loss.item(), count + 1, meta["step"] + 1
                progress(min((epoch + (i + 1) / steps_per_epoch) / spec.epochs, 0.999))
                if spec.max_steps and meta["step"] >= spec.max_steps or out_of_time():
                    break
            model.eval()
            meta["epoch"] = epoch + 1
            record = {"stage": name, "epoch": epoch + 1, "epochs": spec.epochs, "step": int(meta["step"]),
                      "loss": total / max(count, 1)}
            if evals is not None:
                last = evaluate(_Functional(model, weights).eval(), None, evals, state.probe, reference=reference,
                                device=device)
                record["eval"] = last
                if spec.patience is None:
                    pass   # no selection on the eval data: it may be the data a result is reported on
                elif last["score"] > meta["best_score"] + 1e-9:
                    meta["best_score"], meta["bad"] = last["score"], 0
                    best = _snapshot(weights, model)
                else:
                    meta["bad"] += 1
            log(record)
            save(name, _payload(weights, model, opt, meta, best))
            if spec.patience is not None and evals is not None and meta["bad"] >= spec.patience or out_of_time():
                break
        if best is not None:   # early stopping keeps the best epoch: its weights and its batch-norm statistics
            buffers = dict(model.named_buffers())
            with torch.no_grad():
                for k, v in best.items():
                    if k.startswith(_BUFFER):
                        if k[len(_BUFFER):] in buffers:
                            buffers[k[len(_BUFFER):]].copy_(v)
                    else:
                        weights.leaves[k].copy_(v)
    finally:
        model.eval()
        model.to("cpu")
        weights.to("cpu")
        if state.teacher is not None:
            state.teacher.to("cpu")
    return {"epochs": int(meta["epoch"]), "steps": int(meta["step"]),
            "best_score": None if best is None else meta["best_score"], "last_eval": last}
