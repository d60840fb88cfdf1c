"""The int8 stage's second runnable program: torch's own dynamic int8 kernels (fbgemm/oneDNN: per-channel
int8 weights, activations quantized per batch) for Linear layers, traced to TorchScript so it runs with
plain `torch.jit.load`, without modelpress or the model's Python class.

Why this route: for users who serve with torch. On MiniLM at batch 32 (bench/minilm_fast.py, 2026-12-01) this
program ran 1.69x faster than the same model traced to TorchScript in fp32 and was the fastest int8 program of
the job (onnxruntime's model.int8.onnx: 2.18x its own fp32, 1.41x the fastest fp32). torch.ao's
quantize_dynamic is deprecated, but torch 2.13 has no other eager int8 Linear kernel, and TorchScript is the one
format that stores its packed weights without pickling Python classes."""
from __future__ import annotations

import copy
import warnings
from fnmatch import fnmatchcase
from pathlib import Path

import torch

TORCH_INT8_NAME = "model.int8.torchscript.pt"


class _Keywords(torch.nn.Module):
    """Lets a traced text program be called like the Hugging Face model (keyword inputs)."""

    def __init__(self, program: torch.jit.ScriptModule):
        super().__init__()
        self.program = program

    def forward(self, input_ids, attention_mask):
        return self.program(input_ids, attention_mask)


def write_program(model: torch.nn.Module, inputs: tuple, path: Path, text: bool, exclude: list[str] = ()) -> None:
    """`exclude`: glob patterns of layer (or weight) names that stay float32, as in the int8 stage's spec."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    from compression.job.export import _TextModel

    module = copy.deepcopy(model).eval()
    linears = [name for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)
               and not any(fnmatchcase(name, p) or fnmatchcase(f"{name}.weight", p) for p in exclude)]
    module = _TextModel(module) if text else module
    prefix = "model." if text else ""   # names inside the text wrapper
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the deprecation notices of torch.ao and TorchScript
        quantized = quantize_dynamic(module, {prefix + n: per_channel_dynamic_qconfig for n in linears},
                                     dtype=torch.qint8)
        with torch.no_grad():
            traced = torch.jit.trace(quantized, tuple(inputs), check_trace=False, strict=False)
        torch.jit.save(traced, str(path))


def load_program(path: Path, text: bool) -> torch.nn.Module:
    program = torch.jit.load(str(path)).eval()   # our own artifact, written above
    return _Keywords(program) if text else program


def torch_int8_artifact(spec, model: torch.nn.Module, inputs: tuple, out_dir: Path, reference: torch.Tensor,
                        probe, text: bool) -> tuple[list[Path], dict]:
    """(files, report) for an int8 stage: the program, reloaded from its bytes and run on the sample inputs,
    its output difference and its latency beside the float model. Best effort: a failure is a report."""
    from compression.data.outputs import max_abs_diff, mean_cosine
    from compression.job.metrics import job_budget_s, latency

    if spec.mode != "dynamic" or "Linear" not in spec.layers:
        return [], {"ok": False, "reason": "torch int8 kernels cover dynamic mode on Linear layers only"}
    if not any(isinstance(m, torch.nn.Linear) for m in model.modules()):
        return [], {"ok": False, "reason": "the model has no torch.nn.Linear layer"}
    path = Path(out_dir) / TORCH_INT8_NAME
    try:
        write_program(model, inputs, path, text, spec.exclude)
        program = load_program(path, text)
        out = probe(program, inputs)
    except Exception as exc:
        path.unlink(missing_ok=True)
        return [], {"ok": False, "reason": f"torch int8 program failed: {type(exc).__name__}: {exc}"[:500]}
    report = {"ok": True, "runtime": "torch (TorchScript, dynamic int8 kernels)",
              "output_max_abs_diff": max_abs_diff(out, reference),
              "output_mean_cosine": round(mean_cosine(out, reference), 8)}
    budget = job_budget_s()
    if budget:
        try:
            report["latency"] = latency({"fp32 (eager)": model, TORCH_INT8_NAME: program}, inputs, budget_s=budget,
                                        call=probe, gpu=False)
        except Exception as exc:
            report["latency_note"] = f"not measured ({type(exc).__name__}: {str(exc)[:200]})"
    return [path], report
