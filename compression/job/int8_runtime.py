"""Runnable int8 programs with real int8 kernels, beside the container's int8 codes: onnxruntime's
quantizer (MatMulInteger / QLinearConv kernels, fast without compiling). torchao's pt2e route is
compared in bench/ only (bench/pt2e.py), so torchao is the `bench` extra, not a service dependency.
"""
from __future__ import annotations

from pathlib import Path

import torch


def _reader(input_names: list[str], calibration: list[tuple]):
    """The calibration batches as onnxruntime's static quantizer reads them (one feed dict per batch)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{n: t.numpy() for n, t in zip(input_names, b)} for b in calibration])

        def get_next(self):
            return next(self.items, None)

    return Reader()


def quantize_onnx(src: Path, dst: Path, *, static: bool = False, op_types: list[str] | None = None,
                  calibration: list[tuple] | None = None, input_names: list[str] | None = None) -> None:
    """onnxruntime int8 of `src` into `dst`: dynamic (weights int8 per channel, activations quantized at run
    time) or static (QDQ with activation ranges from the calibration batches), for `op_types` (None: all
    that onnxruntime quantizes). onnxruntime's pre-processing (shape inference, graph optimisation) runs first
    as its docs ask; bytes that carry no weights are dropped from the result (`_slim`)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_suffix(".pre.onnx")
    try:
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            source = pre
        except Exception:   # pre-processing is an optimisation only
            source = src
        extra = {} if op_types is None else {"op_types_to_quantize": op_types}
        if static:
            quantize_static(str(source), str(dst), _reader(input_names, calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, **extra)
        else:
            quantize_dynamic(str(source), str(dst), weight_type=QuantType.QInt8, per_channel=True, **extra)
    finally:
        pre.unlink(missing_ok=True)
    _slim(dst)


def _slim(path: Path) -> None:
    """Bytes that carry no weights, out of the quantizer's file: exporter debug info, inferred value_info,
    zero-point inputs of DequantizeLinear that are all zeros (optional: 0 is the default), and long tensor
    names (shortened; graph inputs and outputs keep theirs). On a 136k-parameter CNN these were a quarter of
    the file. onnx has no such pass, hence by hand."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del graph.value_info[:]
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) == 3 and node.input[2] in inits \
                and not numpy_helper.to_array(inits[node.input[2]]).any():
            del node.input[2]
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    _shorten_names(graph)
    onnx.save(model, str(path))


def _shorten_names(graph) -> None:
    if any(a.type in (a.GRAPH, a.GRAPHS) for node in graph.node for a in node.attribute):
        return   # subgraphs refer to outer names: leave them as they are
    keep = {v.name for v in list(graph.input) + list(graph.output)}
    short: dict[str, str] = {}

    def name(old: str) -> str:
        if not old or old in keep:
            return old
        return short.setdefault(old, format(len(short), "x"))

    for t in graph.initializer:
        t.name = name(t.name)
    for i, node in enumerate(graph.node):
        node.name = f"n{i:x}"
        node.input[:] = [name(n) for n in node.input]
        node.output[:] = [name(n) for n in node.output]


class OnnxRunner:
    """An onnxruntime session called like a module: positional tensors in, first output as a tensor."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs):
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(self.names, inputs)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


INT8_ONNX_NAME = "model.int8.onnx"


def int8_runtime_artifacts(stages: list, onnx_path: Path | None, out_dir: Path, calibration: list[tuple] | None,
                           inputs: tuple, reference: torch.Tensor, probe) -> tuple[list[Path], dict | None]:
    """For a pipeline with an int8 stage: model.int8.onnx (onnxruntime int8 kernels) quantized from the
    job's verified float model.onnx, reloaded and run on the sample inputs. Returns (files, report);
    report None when the pipeline has no int8 stage. Best effort: a failure is a report, not an error.
    The output difference is recorded, not bounded: activations are quantized too."""
    from compression.data.outputs import max_abs_diff, mean_cosine
    from compression.job.export import load_own_onnx

    spec = next((s for s in stages if getattr(s, "kind", None) == "int8"), None)
    if spec is None:
        return [], None
    if onnx_path is None or not Path(onnx_path).exists():
        return [], {"ok": False, "reason": "no verified model.onnx to quantize"}
    dst = Path(out_dir) / INT8_ONNX_NAME
    try:
        names = [i.name for i in load_own_onnx(onnx_path).session.get_inputs()]
        batches = [tuple(b[:len(names)]) for b in (calibration or [])]
        quantize_onnx(Path(onnx_path), dst, static=spec.mode == "static", op_types=spec.op_types(),
                      calibration=batches, input_names=names)
        out = probe(load_own_onnx(dst), inputs)
    except Exception as exc:
        dst.unlink(missing_ok=True)
        return [], {"ok": False, "reason": f"int8 program failed: {type(exc).__name__}: {exc}"[:500]}
    report = {"ok": True, "runtime": "onnxruntime", "mode": spec.mode,
              "output_max_abs_diff": max_abs_diff(out, reference),
              "output_mean_cosine": round(mean_cosine(out, reference), 8)}
    report.update(_onnx_latency(Path(onnx_path), dst, inputs, probe))
    return [dst], report


def _onnx_latency(fp32: Path, q: Path, inputs: tuple, probe) -> dict:
    """model.onnx vs model.int8.onnx side by side (the container's model runs float kernels)."""
    from compression.job.export import load_own_onnx
    from compression.job.metrics import default_threads, job_budget_s, latency

    budget = job_budget_s()
    if budget == 0:
        return {}
    previous = torch.get_num_threads()
    torch.set_num_threads(default_threads())   # sessions take their thread count from torch's
    try:
        sessions = {"model.onnx": load_own_onnx(fp32), INT8_ONNX_NAME: load_own_onnx(q)}
        return {"latency": latency(sessions, inputs, budget_s=budget, call=probe, gpu=False)}
    except Exception as exc:
        return {"latency_note": f"not measured ({type(exc).__name__}: {str(exc)[:200]})"}
    finally:
        torch.set_num_threads(previous)
