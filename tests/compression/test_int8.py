import onnx
import pytest
import torch
from torch import nn

from compression.formats.architectures import build_architecture
from compression.coding.encoding import decode
from compression.errors import CompressionError
from compression.job.export import write_onnx
from compression.job.int8_runtime import INT8_ONNX_NAME, int8_runtime_artifacts
from compression.stage import CompressionState
from compression.methods.int8 import Int8Spec, int8
from compression.data.outputs import run
from compression.pipeline import parse_pipeline


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).eval()


def test_stage_stores_int8_codes_that_decode_to_the_model_weights():
    model = build_architecture("lenet-300-100")
    before = model.fc1.weight.detach().clone()
    state = CompressionState(model)
    int8(Int8Spec(kind="int8", exclude=["fc3"]), state)
    assert set(state.encodings) == {"fc1.weight", "fc2.weight"}
    enc = state.encodings["fc1.weight"]
    assert enc.parts["codes"].storage == "int8" and enc.parts["scales"].data.shape == (300,)
    assert torch.equal(decode(enc), model.fc1.weight)
    assert 0 < (model.fc1.weight - before).abs().max() <= before.abs().amax(1).max() / 254 + 1e-6


def test_layer_types_and_static_mode_need_what_they_say():
    with pytest.raises(CompressionError, match="selects no Conv"):
        int8(Int8Spec(kind="int8", layers=["Conv"]), CompressionState(build_architecture("lenet-300-100")))
    assert Int8Spec(kind="int8", mode="static").needs_data and not Int8Spec(kind="int8").needs_data
    with pytest.raises(CompressionError, match="calibration"):
        int8(Int8Spec(kind="int8", mode="static"), CompressionState(_cnn()))
    state = CompressionState(_cnn())
    int8(Int8Spec(kind="int8", layers=["Conv"]), state)
    assert set(state.encodings) == {"0.weight"}
    assert parse_pipeline({"stages": [{"kind": "int8", "mode": "static"}]}).stages[0].mode == "static"


@pytest.mark.parametrize("mode, op", [("dynamic", "MatMulInteger"), ("static", "QLinearConv")])
def test_runtime_artifact_runs_int8_kernels(tmp_path, monkeypatch, mode, op):
    monkeypatch.setenv("MODELPRESS_LATENCY_BUDGET_S", "0.01")
    model, x = _cnn(), torch.randn(8, 1, 8, 8)
    spec = Int8Spec(kind="int8", mode=mode)
    state = CompressionState(model, calibration=[(x,)])
    int8(spec, state)
    write_onnx(model, (x[:2],), tmp_path / "model.onnx")
    reference = run(model, (x,))
    files, report = int8_runtime_artifacts([spec], tmp_path / "model.onnx", tmp_path, [(x,)], (x,), reference, run)
    assert files == [tmp_path / INT8_ONNX_NAME] and report["ok"], report
    ops = {n.op_type for n in onnx.load(str(files[0])).graph.node}
    assert op in ops or (mode == "static" and "QuantizeLinear" in ops), ops
    assert report["output_mean_cosine"] > 0.99 and report["output_max_abs_diff"] > 0
    assert set(report["latency"]["cpu"]["batch_32"]) == {"model.onnx", INT8_ONNX_NAME}


def test_runtime_artifact_only_for_int8_pipelines(tmp_path):
    assert int8_runtime_artifacts([], None, tmp_path, None, (), torch.zeros(1), run) == ([], None)
    files, report = int8_runtime_artifacts([Int8Spec(kind="int8")], None, tmp_path, None, (), torch.zeros(1), run)
    assert files == [] and not report["ok"]


def test_job_writes_and_checks_the_int8_program(lenet_safetensors, tmp_path, monkeypatch):
    from compression.job.runner import run_compression_job

    monkeypatch.setenv("MODELPRESS_LATENCY_BUDGET_S", "0")
    out = run_compression_job(lenet_safetensors, "safetensors", {"architecture": "lenet-300-100"},
                              parse_pipeline({"stages": [{"kind": "int8"}]}), tmp_path)
    kinds = {a.kind: a for a in out.artifacts}
    assert kinds["onnx-int8"].path.name == INT8_ONNX_NAME
    m = out.metrics
    assert m["verification"]["model.mpz"]["weights_bitwise_equal"] is True
    assert m["exports"]["int8"]["ok"] and m["exports"]["int8"]["output_mean_cosine"] > 0.99
    assert m["artifact_bytes"][INT8_ONNX_NAME] < m["artifact_bytes"]["model.onnx"] / 3
    batch = m["sample_inputs"][0][0]
    assert m["macs_before"] == m["macs_after"] == batch * (784 * 300 + 300 * 100 + 100 * 10)
    assert "latency: not measured (turned off)" in m["notes"]


def test_job_writes_a_torchscript_program_with_torch_int8_kernels(lenet_safetensors, tmp_path, monkeypatch):
    from compression.job.int8_torch import TORCH_INT8_NAME
    from compression.job.runner import run_compression_job

    monkeypatch.setenv("MODELPRESS_LATENCY_BUDGET_S", "0")
    out = run_compression_job(lenet_safetensors, "safetensors", {"architecture": "lenet-300-100"},
                              parse_pipeline({"stages": [{"kind": "int8"}]}), tmp_path)
    art = {a.kind: a for a in out.artifacts}["torchscript-int8"]
    assert art.name == TORCH_INT8_NAME and out.metrics["exports"]["int8_torch"]["output_mean_cosine"] > 0.99
    program = torch.jit.load(str(art.path))   # plain torch, no modelpress class needed
    assert "quantized::linear_dynamic" in str(program.inlined_graph)   # real int8 kernels
    x = torch.randn(3, 1, 28, 28)   # another batch size than the trace's
    assert program(x).shape == (3, 10)


def test_no_torch_int8_program_for_static_mode():
    from compression.job.int8_torch import torch_int8_artifact

    files, report = torch_int8_artifact(Int8Spec(kind="int8", mode="static"), torch.nn.Linear(2, 2), (), None,
                                        torch.zeros(1), run, False)
    assert files == [] and not report["ok"] and "dynamic" in report["reason"]


def test_excluded_layers_stay_float_in_the_torch_program(tmp_path):
    from compression.job.int8_torch import write_program

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    write_program(model, (torch.randn(3, 4),), tmp_path / "p.pt", False, exclude=["2"])
    program = torch.jit.load(str(tmp_path / "p.pt"))
    assert str(program.inlined_graph).count("quantized::linear_dynamic") == 1   # layer 0 only
    torch.testing.assert_close(program(torch.ones(1, 4)), model(torch.ones(1, 4)), atol=0.05, rtol=0.05)


def test_int8_program_carries_no_dead_bytes(tmp_path):
    """The static quantizer's file slimmed: same outputs, no zero zero-points, short names, smaller."""
    import numpy as np
    import onnxruntime as ort
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from compression.job.int8_runtime import _reader, _slim

    model, x = build_architecture("mobilenet-mini"), torch.randn(16, 1, 28, 28)
    write_onnx(model, (x[:2],), tmp_path / "model.onnx")
    raw = tmp_path / "raw.onnx"
    quantize_static(str(tmp_path / "model.onnx"), str(raw), _reader(["x"], [(x,)]), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    slim = tmp_path / "slim.onnx"
    slim.write_bytes(raw.read_bytes())
    _slim(slim)
    outputs = [ort.InferenceSession(str(p)).run(None, {"x": x.numpy()})[0] for p in (raw, slim)]
    np.testing.assert_array_equal(*outputs)
    graph = onnx.load(str(slim)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    assert not [n for n in graph.node if n.op_type == "DequantizeLinear" and len(n.input) == 3
                and n.input[2] in inits and not inits[n.input[2]].any()]
    assert max(len(name) for name in inits) <= 4 and not graph.value_info
    assert slim.stat().st_size < 0.9 * raw.stat().st_size
