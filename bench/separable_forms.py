"""Why separable filters of rank r are r depthwise convs (compression.layers.separable) and not one depthwise
conv with a channel multiplier: both forms of the same small-resnet side by side with the dense model and rank 1,
random weights (speed only), batch 32, 2 threads: onnxruntime and torch eager inference and one eager training
step (forward + backward), interleaved medians of 40.

    python bench/separable_forms.py      # ~1 min

Measured 2026-12-01, 2 idle cores, 4 runs, onnxruntime sessions with the service's options (idle threads do not
spin; with spinning on, as first measured, each session's spinning threads slowed whatever ran next and every
figure came out 2-5x slower): onnxruntime ms at batch 32: dense 1.82-1.93, rank 1 0.82-0.87, rank 2 as a
channel multiplier 3.37-4.10 (0.47-0.57x the dense speed), rank 2 as SeparableConv2d 1.39-1.83 (1.05-1.37x the
dense speed, 2.2-2.4x the channel multiplier's); eager inference: dense 3.0-3.2, SeparableConv2d 3.8-4.5,
channel multiplier 6.2-6.9; an eager training step: dense 10-11 ms, SeparableConv2d 14-19, channel
multiplier 24-30.
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

from compression.formats import onnx_file  # noqa: E402
from compression.formats.architectures import build_architecture  # noqa: E402
from compression.methods.compact_filters import separable  # noqa: E402

THREADS, BATCH, REPS = 2, 32, 40


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
            # the service's session options: idle threads do not spin (spinning ones steal the next call's cores)
            sessions[name] = onnx_file.session(Path(f"{tmp}/{n}.onnx").read_bytes())
    feeds = {name: {s.get_inputs()[0].name: x.numpy()} for name, s in sessions.items()}

    def no_grad(model):
        with torch.no_grad():
            model(x)

    calls = {name: {"onnxruntime": lambda name=name: sessions[name].run(None, feeds[name]),
                    "eager": lambda m=model: no_grad(m), "train step": lambda m=model: train_step(m, x, y)}
             for name, model in models.items()}
    times = {name: {what: [] for what in c} for name, c in calls.items()}
    for c in calls.values():   # warm-up
        for call in c.values():
            call()
    for _ in range(REPS):   # interleaved: drifts of the machine hit every form alike
        for name, c in calls.items():
            for what, call in c.items():
                start = time.perf_counter()
                call()
                times[name][what].append(time.perf_counter() - start)
    for name, t in times.items():
        print(f"{name:28}" + "  ".join(f"{what} {statistics.median(v) * 1000:6.2f} ms" for what, v in t.items()))


if __name__ == "__main__":
    main()
