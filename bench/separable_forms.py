"""Why separable filters of rank r are r depthwise convs (compression.layers.separable) and not one depthwise
conv with a channel multiplier: both forms of the same small-resnet side by side with the dense model and rank 1,
random weights (speed only), batch 32, 2 threads: onnxruntime and torch eager inference and one eager training
step (forward + backward), medians of alternating blocks.

    python bench/separable_forms.py      # ~1 min

Measured 2026-12-01, 2 idle cores, 3 runs, timed as the service times (compression.job.metrics: alternating
blocks of calls, sessions whose idle threads do not spin); onnxruntime ms at batch 32: dense 1.57-1.64, rank 1
0.60-0.63, rank 2 as a channel multiplier 2.46-2.60 (0.63-0.64x the dense speed), rank 2 as SeparableConv2d
1.23-1.29 (1.27-1.28x the dense speed, 2x the channel multiplier's); an eager training step: dense 10.5-11.6 ms,
SeparableConv2d 15.5-18.3, channel multiplier 24.5-26.4. Eager inference varies run to run (dense 2.2-4.1 ms,
SeparableConv2d 3.0-7.1, channel multiplier 9.4-11.6). The first measurement (4.7-5.2 ms dense, every call
alternating, idle threads spinning) was 2-3x slower throughout.
"""
import copy
import statistics
import tempfile
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compression.job.export import load_own_onnx  # noqa: E402
from compression.job.metrics import latency  # noqa: E402
from compression.formats.architectures import build_architecture  # noqa: E402
from compression.methods.compact_filters import separable  # noqa: E402

THREADS, BATCH, REPS = 2, 32, 10


def old_form(conv: nn.Conv2d, r: int) -> nn.Sequential:
    """The earlier layout: one depthwise conv with r filters per channel, then one pointwise conv."""
    i, o = conv.in_channels, conv.out_channels
    dw = nn.Conv2d(i, i * r, conv.kernel_size, conv.stride, conv.padding, groups=i, bias=False)
    return nn.Sequential(dw, nn.Conv2d(i * r, o, 1, bias=conv.bias is not None))


def swap(model: nn.Module, replace) -> nn.Module:
    """Every 3x3 conv reading more than one channel replaced (what compact_filters selects on small-resnet)."""
    model = copy.deepcopy(model)
    for name, mod in list(model.named_modules()):
        if type(mod) is nn.Conv2d and mod.groups == 1 and mod.kernel_size != (1, 1) and mod.in_channels > 1:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, replace(mod))
    return model.eval()


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.train()
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    model.eval()


def main() -> None:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    dense = build_architecture("small-resnet").eval()
    models = {"dense": dense, "rank 1": swap(dense, lambda c: separable(c, 1)[0]),
              "rank 2, channel multiplier": swap(dense, lambda c: old_form(c, 2)),
              "rank 2, SeparableConv2d": swap(dense, lambda c: separable(c, 2)[0])}
    x, y = torch.randn(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, model) in enumerate(models.items()):
            torch.onnx.export(model, (x,), f"{tmp}/{n}.onnx", dynamo=False)
            sessions[name] = load_own_onnx(Path(f"{tmp}/{n}.onnx"))   # the service's session options
    # inference as the service times it (alternating blocks of calls); a training step needs gradients, so
    # its own alternating loop
    ms = {"onnxruntime": latency(sessions, (x,), batch_sizes=(BATCH,), threads=THREADS, budget_s=2.0, gpu=False),
          "eager": latency(models, (x,), batch_sizes=(BATCH,), threads=THREADS, budget_s=2.0, gpu=False)}
    ms = {what: {name: t["median_ms"] for name, t in m["cpu"][f"batch_{BATCH}"].items()} for what, m in ms.items()}
    steps = {name: [] for name in models}
    for _ in range(REPS):
        for name, model in models.items():
            for i in range(4):   # the first step of a block warms the caches the previous model's evicted
                start = time.perf_counter()
                train_step(model, x, y)
                if i:
                    steps[name].append(time.perf_counter() - start)
    ms["train step"] = {name: statistics.median(t) * 1000 for name, t in steps.items()}
    for name in models:
        print(f"{name:28}" + "  ".join(f"{what} {m[name]:6.2f} ms" for what, m in ms.items()))


if __name__ == "__main__":
    main()
