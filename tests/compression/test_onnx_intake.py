"""ONNX graphs as people ship them (#15): recurrent layers' weights are compressed in place, and a
graph that fails on a guessed symbolic dimension says which guess and how to give the shape."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compression.formats import ModelFormatError, onnx_file
from compression.formats.inspect import inspect_upload
from compression.job.runner import run_compression_job
from compression.pipeline import parse_pipeline

HIDDEN, FEATURES = 16, 8


def _lstm_classifier(path: Path) -> Path:
    """LSTM over a symbolic time axis, its last hidden state into a MatMul head."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name) for name, shape in
             (("lstm.W", (1, 4 * HIDDEN, FEATURES)), ("lstm.R", (1, 4 * HIDDEN, HIDDEN)), ("lstm.B", (1, 8 * HIDDEN)),
              ("head.weight", (HIDDEN, 4)))] + [numpy_helper.from_array(np.array([0], np.int64), "axes0")]
    nodes = [helper.make_node("LSTM", ["x", "lstm.W", "lstm.R", "lstm.B"], ["Y", "Y_h"], hidden_size=HIDDEN),
             helper.make_node("Squeeze", ["Y_h", "axes0"], ["h"]),
             helper.make_node("MatMul", ["h", "head.weight"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         ["time", "batch", FEATURES])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_lstm_weights_are_compressed_in_place_and_the_graph_still_runs(tmp_path):
    path = _lstm_classifier(tmp_path / "lstm.onnx")
    layers = inspect_upload(path, "onnx", {})["inspection"]["layers_by_type"]
    assert layers == {"LSTM": {"count": 2, "parameters": 4 * HIDDEN * (FEATURES + HIDDEN)},
                      "Linear": {"count": 1, "parameters": HIDDEN * 4}}
    options = {"input_shapes": {"x": [5, 8, FEATURES]}}
    out = run_compression_job(path, "onnx", options, parse_pipeline({"stages": [{"kind": "quantize", "dtype": "int8"}]}),
                              tmp_path / "out", measure_latency=False)
    assert out.metrics["compression_ratio"] > 2 and out.metrics["quality"]["passed"] is True
    dense = onnx.load(str(tmp_path / "out" / "model.onnx"))
    weights = {i.name: numpy_helper.to_array(i) for i in dense.graph.initializer}
    original = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    for name in ("lstm.W", "lstm.R"):   # same layout, int8-quantized values
        assert weights[name].shape == original[name].shape
        assert 0 < np.abs(weights[name] - original[name]).max() < np.abs(original[name]).max() / 100
    np.testing.assert_array_equal(weights["lstm.B"], original["lstm.B"])   # biases stay as they were


def _reflect_pad(path: Path) -> Path:
    pads = numpy_helper.from_array(np.array([0, 2, 0, 2], np.int64), "pads")
    weight = numpy_helper.from_array(np.ones((12, 3), np.float32), "fc.weight")
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
             helper.make_node("MatMul", ["p", "fc.weight"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [pads, weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_wrong_guess_of_a_symbolic_dimension_names_the_guess_and_the_fix(tmp_path):
    path = _reflect_pad(tmp_path / "pad.onnx")
    with pytest.raises(ModelFormatError) as info:
        inspect_upload(path, "onnx", {})
    message = info.value.message
    assert "x: [batch=8, time=1]" in message and '"input_shapes": {"x": [...]}' in message, message
    found = inspect_upload(path, "onnx", {"input_shapes": {"x": [4, 8]}})["inspection"]
    assert found["output_features"] == 3
    assert onnx_file.guessed_dims_hint(onnx.load(str(path)), {"input_shapes": {"x": [4, 8]}}) == ""


def _indirect_weights(path: Path) -> Path:
    """Weights as exporters also write them: a Constant node, a Transpose of an initializer, a Cast of an
    fp16 initializer."""
    rng = np.random.default_rng(1)
    w1 = rng.normal(0, 0.3, (8, 16)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (12, 16)).astype(np.float32)           # stored [out, in], transposed in the graph
    w3 = rng.normal(0, 0.3, (12, 4)).astype(np.float16)
    nodes = [helper.make_node("Constant", [], ["w1"], value=numpy_helper.from_array(w1, "w1v")),
             helper.make_node("MatMul", ["x", "w1"], ["h1"]),
             helper.make_node("Transpose", ["w2_t"], ["w2"], perm=[1, 0]),
             helper.make_node("MatMul", ["h1", "w2"], ["h2"]),
             helper.make_node("Cast", ["w3_half"], ["w3"], to=TensorProto.FLOAT),
             helper.make_node("Gemm", ["h2", "w3"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                              [numpy_helper.from_array(w2, "w2_t"), numpy_helper.from_array(w3, "w3_half")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_weights_behind_constant_transpose_and_cast_nodes_are_compressed(tmp_path):
    path = _indirect_weights(tmp_path / "indirect.onnx")
    layers = inspect_upload(path, "onnx", {})["inspection"]["layers_by_type"]
    assert layers == {"Linear": {"count": 3, "parameters": 8 * 16 + 16 * 12 + 12 * 4}}
    out = run_compression_job(path, "onnx", {}, parse_pipeline({"stages": [{"kind": "quantize", "dtype": "int8"}]}),
                              tmp_path / "out", measure_latency=False)
    dense = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert {n.op_type for n in dense.graph.node} == {"MatMul", "Gemm"}   # folded into initializers
    assert out.metrics["quality"]["passed"] and out.metrics["output_mean_cosine"] > 0.999
    rebuilt = onnx_file.rebuild_from_container(tmp_path / "out" / "model.mpz", path)   # from the upload itself
    for init in rebuilt.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(init),
                                      numpy_helper.to_array(next(i for i in dense.graph.initializer if i.name == init.name)))


@pytest.mark.parametrize("stages, form", [([{"kind": "quantize", "dtype": "int4"}], "dequantize int4"),
                                          ([{"kind": "share", "bits": 4}], "gather uint4")])
def test_an_onnx_upload_gets_a_compact_runnable_file_too(tmp_path, stages, form):
    path = _lstm_classifier(tmp_path / "lstm.onnx")
    out = run_compression_job(path, "onnx", {"input_shapes": {"x": [5, 8, FEATURES]}}, parse_pipeline({"stages": stages}),
                              tmp_path / "out", measure_latency=False)
    info = out.metrics["exports"]["onnx_compact"]
    assert info["ok"] and info["forms"]["head.weight"] == form, info   # a MatMul weight held as [out, in]
    assert {"lstm.W", "lstm.R"} <= set(info["forms"])   # recurrent weights held 2-D, written in their 3-D layout
    assert out.metrics["verification"]["model.compact.onnx"]["output_max_abs_diff"] < 1e-5
    assert (tmp_path / "out" / "model.compact.onnx").stat().st_size < (tmp_path / "out" / "model.onnx").stat().st_size


def _branches(path: Path) -> Path:
    """An If whose two branches each hold their own weight under the same initializer name (exporters of
    sample-rate switches write this), the condition a scalar bool input."""
    rng = np.random.default_rng(1)

    def branch(name: str, scale: float):
        w = numpy_helper.from_array((rng.normal(0, 1, (FEATURES, 4)) * scale).astype(np.float32), "w")
        return helper.make_graph([helper.make_node("MatMul", ["x", "w"], [f"{name}_y"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, ["batch", 4])], [w])

    node = helper.make_node("If", ["flag"], ["y"], then_branch=branch("then", 1.0), else_branch=branch("else", 3.0))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES]),
                                            helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_weights_inside_if_branches_are_compressed_under_names_that_stay_apart(tmp_path):
    path = _branches(tmp_path / "if.onnx")
    names = sorted(t.name for t in onnx_file.load(path, {}).targets)
    assert names == ["If_0.else_branch::w", "If_0.then_branch::w"]
    with pytest.raises(ModelFormatError, match=r"options.input_values names 'sr', not an input of the graph"):
        onnx_file.load(path, {"input_values": {"sr": 1}})
    for flag in (True, False):   # the branch the given value selects is the one measured
        out = run_compression_job(path, "onnx", {"input_values": {"flag": flag}},
                                  parse_pipeline({"stages": [{"kind": "quantize", "dtype": "int4"}]}),
                                  tmp_path / f"out-{flag}", measure_latency=False)
        assert out.metrics["verification"]["model.mpz"]["weights_bitwise_equal"] is True
        assert out.metrics["output_max_abs_diff"] > 0 and out.metrics["output_mean_cosine"] > 0.95
    dense = onnx.load(str(tmp_path / "out-True" / "model.onnx"))
    original = onnx.load(str(path))
    for branch in (0, 1):   # both branches' weights hold int4 grid values now, each from its own weights
        new = numpy_helper.to_array(dense.graph.node[0].attribute[branch].g.initializer[0])
        old = numpy_helper.to_array(original.graph.node[0].attribute[branch].g.initializer[0])
        assert len(np.unique(new[:, 0])) <= 16 and np.abs(new - old).max() < np.abs(old).max() / 4
