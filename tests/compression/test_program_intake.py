""".pt2 programs as people export them (#15): a dynamic batch is accepted once every symbolic
expression passes a strict parser; layers become real modules so layer-selecting methods work;
a fixed-batch program with a dataset is refused with the fix, never an AssertionError mid-job."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from compression.data.datasets import check_dataset_against_model
from compression.errors import CompressionError
from compression.formats import ModelFormatError, load_model, sniff
from compression.formats.inspect import inspect_upload, module_types
from compression.formats.torch_export import check_expression
from compression.job.runner import run_compression_job
from compression.pipeline import parse_pipeline


class SmallCNN(torch.nn.Module):
    """Conv + batch norm + pooling, a view on the symbolic batch and arithmetic on it, a classifier."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        y = torch.nn.functional.max_pool2d(self.bn(self.conv(x)).relu(), 2)
        y = y.view(y.size(0), -1).reshape(x.shape[0] * 2, -1)
        return self.fc(y.reshape(x.shape[0], -1))


def _export(path: Path, dynamic: bool) -> Path:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic else None
    torch.export.save(torch.export.export(model, (torch.randn(2, 3, 16, 16),), dynamic_shapes=shapes), str(path))
    return path


def _eval_data(path: Path, n: int = 100) -> Path:
    np.savez(path, inputs=np.random.default_rng(0).normal(size=(n, 3, 16, 16)).astype(np.float32))
    return path


def test_a_dynamic_batch_program_loads_with_its_layers_as_modules(tmp_path):
    path = _export(tmp_path / "cnn.pt2", dynamic=True)
    assert sniff(path).format == "torch-export"
    loaded = load_model(path, "torch-export", {})
    assert {"conv": "Conv2d", "fc": "Linear"}.items() <= module_types(loaded.model).items()
    x = torch.randn(5, 3, 16, 16)
    torch.testing.assert_close(loaded.model(x), torch.export.load(str(path)).module()(x), rtol=0, atol=0)
    loaded.model.train()   # a training loop's call no longer raises
    loaded.model.eval()
    inspection = inspect_upload(path, "torch-export", {})["inspection"]
    assert inspection["inputs"] == [{"name": "x", "shape": [inspection["inputs"][0]["shape"][0], 3, 16, 16],
                                     "dtype": "float32", "dynamic_dims": [0]}]
    assert isinstance(inspection["inputs"][0]["shape"][0], str) and "static_batch" not in inspection


def test_int8_stage_runs_on_a_dynamic_program_with_a_100_sample_dataset(tmp_path):
    path = _export(tmp_path / "cnn.pt2", dynamic=True)
    out = run_compression_job(path, "torch-export", {}, parse_pipeline({"stages": [{"kind": "int8"}]}), tmp_path / "o",
                              dataset_files={"eval": (_eval_data(tmp_path / "e.npz"), "npz")}, measure_latency=False)
    assert out.metrics["quality"]["inputs"] == "the eval dataset (100 samples)"
    assert out.metrics["quality"]["passed"] is True, out.metrics["quality"]
    assert {"model.pt2", "model.int8.onnx"} <= {a.name for a in out.artifacts}


def test_a_fixed_batch_program_with_a_dataset_is_refused_with_the_fix(tmp_path):
    path = _export(tmp_path / "static.pt2", dynamic=False)
    inspection = inspect_upload(path, "torch-export", {})["inspection"]
    assert inspection["static_batch"] == 2
    summary = {"format": "torch-export", "inspection": inspection}
    dataset = {"inputs": [{"name": "inputs", "shape": [3, 16, 16], "dtype": "float32"}], "samples": 100}
    [problem] = check_dataset_against_model(dataset, summary, {}, "eval")
    assert "fixed batch of 2" in problem and "torch.export.Dim" in problem
    with pytest.raises(CompressionError, match="fixed batch of 2"):
        run_compression_job(path, "torch-export", {}, parse_pipeline({"stages": [{"kind": "int8"}]}), tmp_path / "o",
                            dataset_files={"eval": (_eval_data(tmp_path / "e.npz"), "npz")}, measure_latency=False)


def test_layer_swapping_stages_run_on_a_dynamic_program_and_its_files_rebuild(tmp_path):
    """low_rank + compact_filters swap the lifted conv/fc for products of thinner layers; the container rebuilds
    from the uploaded program + the structure record, and the re-exported model.pt2 keeps the dynamic batch."""
    from compression.coding.container import load_container_module
    from compression.job.export import load_own_pt2

    path = _export(tmp_path / "cnn.pt2", dynamic=True)
    stages = [{"kind": "compact_filters", "form": "separable", "layers": ["conv"]},
              {"kind": "low_rank", "rank": 4, "layer_types": ["linear"]}]
    out = run_compression_job(path, "torch-export", {}, parse_pipeline({"stages": stages}), tmp_path / "o",
                              dataset_files={"eval": (_eval_data(tmp_path / "e.npz"), "npz")}, measure_latency=False)
    assert [r["result"][0]["params_after"] < r["result"][0]["params_before"] for r in out.metrics["stages"]] \
        == [True, True], out.metrics["stages"]
    checks = out.metrics["verification"]
    assert checks["model.mpz"]["weights_bitwise_equal"] and checks["model.pt2"]["output_max_abs_diff"] == 0
    x = torch.randn(7, 3, 16, 16)   # a batch size the upload was never run at
    rebuilt = load_container_module(tmp_path / "o" / "model.mpz", program=path)
    assert type(rebuilt.fc).__name__ == "Sequential" and out.metrics["exports"]["pt2"]["dynamic_batch"] is True
    torch.testing.assert_close(load_own_pt2(tmp_path / "o" / "model.pt2")(x), rebuilt(x), rtol=1e-5, atol=1e-5)


def _with_program(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("models/model.json"):
                data = json.dumps(edit(json.loads(data))).encode()
            zout.writestr(item, data)
    return dst


@pytest.mark.parametrize("hostile", [
    "__import__('os').system('touch /tmp/modelpress-pwned')",
    "Symbol('s0').__class__.__mro__",
    "Pow(Symbol('{sym}', integer=True), Integer(2))",
    "Mul(Integer(2), Symbol('undeclared', integer=True))",
])
def test_hostile_symbolic_expressions_are_refused_before_torch_sees_them(tmp_path, hostile):
    path = _export(tmp_path / "cnn.pt2", dynamic=True)

    def edit(program):
        symbol = next(iter(program["range_constraints"]))
        values = program["graph_module"]["graph"]["sym_int_values"]
        next(iter(values.values()))["as_expr"]["expr_str"] = hostile.replace("{sym}", symbol)
        return program

    bad = _with_program(path, tmp_path / "bad.pt2", edit)
    with pytest.raises(ModelFormatError, match="symbolic shape expression"):
        sniff(bad)
    with pytest.raises(ModelFormatError, match="symbolic shape expression"):
        load_model(bad, "torch-export", {})
    assert not Path("/tmp/modelpress-pwned").exists()


def test_range_constraints_must_be_symbols_with_integer_bounds(tmp_path):
    path = _export(tmp_path / "cnn.pt2", dynamic=True)
    bad = _with_program(path, tmp_path / "bad.pt2", lambda p: {
        **p, "range_constraints": {"s0": {"min_val": "__import__('os')", "max_val": None}}})
    with pytest.raises(ModelFormatError, match="range constraint"):
        sniff(bad)


def test_the_expression_parser_takes_only_arithmetic_on_declared_symbols():
    ok = ["Symbol('s1', positive=True, integer=True)", "Mul(Integer(2), Symbol('s1', integer=True))",
          "Max(Integer(1), FloorDiv(Add(Symbol('s1'), Integer(-3)), Integer(2)))", "2*s1 - 1", "s1 // 4"]
    for text in ok:
        check_expression(text, {"s1"})
    for text in ["s1 ** 2", "Integer(1.5)", "lambda: 1", "s1.real", "Symbol('s1', evaluate=f())", "x" * 5000,
                 "Min()", "(" * 200 + "s1" + ")" * 200 + "+[1]"]:
        with pytest.raises(ModelFormatError):
            check_expression(text, {"s1"})


class WithRate(torch.nn.Module):
    """A Linear and an LSTM, and a required int argument (as audio models take a sample rate)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.lstm = torch.nn.LSTM(4, 4, batch_first=True)

    def forward(self, x: torch.Tensor, sr: int, scale: float = 1.0):
        return self.lstm(self.fc(x) * (sr / 16000) * scale)[0]


class Streaming(torch.nn.Module):
    """Keeps state between calls, as streaming audio models do (silero-vad's _state / _last_batch_size)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.state = torch.zeros(0)
        self.calls = 0

    def forward(self, x: torch.Tensor, sr: int):
        if self.state.numel() == 0:
            self.state = torch.zeros(x.shape[0], 4)
        self.state = torch.tanh(self.fc(x) + self.state)
        self.calls += 1
        return self.state * (sr / 16000)


def test_a_required_scalar_argument_takes_its_value_from_options(tmp_path):
    torch.manual_seed(0)
    model = WithRate().eval()
    torch.jit.save(torch.jit.script(model), str(tmp_path / "rate.ts"))
    with pytest.raises(ModelFormatError, match=r'sr: int.*"input_values": \{"sr": <value>\}'):
        inspect_upload(tmp_path / "rate.ts", "torchscript", {"input_shape": [2, 5, 4]})
    with pytest.raises(ModelFormatError, match=r"'rate', not a non-tensor argument of forward \(sr: int, scale: float\)"):
        inspect_upload(tmp_path / "rate.ts", "torchscript", {"input_shape": [2, 5, 4], "input_values": {"rate": 1}})

    options = {"input_shape": [2, 5, 4], "input_values": {"sr": 8000}}
    found = inspect_upload(tmp_path / "rate.ts", "torchscript", options)["inspection"]
    assert {"Linear", "LSTM"} <= set(found["layers_by_type"])
    out = run_compression_job(tmp_path / "rate.ts", "torchscript", options,
                              parse_pipeline({"stages": [{"kind": "quantize", "dtype": "int8"}]}), tmp_path / "o",
                              measure_latency=False)
    assert out.metrics["quality"]["passed"] is True and out.metrics["compression_ratio"] > 2
    program = torch.jit.load(str(tmp_path / "o" / "model.torchscript.pt"))   # the upload's own signature
    x = torch.randn(2, 5, 4)
    assert [a.name for a in program.forward.schema.arguments] == ["self", "x", "sr", "scale"]
    torch.testing.assert_close(program(x, 8000), model(x, 8000), atol=0.05, rtol=0)


def test_a_program_that_keeps_state_between_calls_is_judged_per_call_and_saved_as_uploaded(tmp_path):
    torch.jit.save(torch.jit.script(Streaming().eval()), str(tmp_path / "stream.ts"))
    options = {"input_shape": [3, 4], "input_values": {"sr": 16000}}
    out = run_compression_job(tmp_path / "stream.ts", "torchscript", options,
                              parse_pipeline({"stages": [{"kind": "quantize", "dtype": "fp16"}]}), tmp_path / "o",
                              measure_latency=False)   # verification reruns every artifact: state must not leak in
    assert out.metrics["quality"]["passed"] is True
    saved = torch.jit.load(str(tmp_path / "o" / "model.torchscript.pt"))
    assert saved.state.numel() == 0 and saved.calls == 0   # as uploaded, not as the job left it


def test_a_model_that_fails_on_its_example_inputs_is_the_users_error_with_a_hint(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(6, 3)).eval()), str(tmp_path / "m.ts"))
    with pytest.raises(ModelFormatError, match=r"does not run on its example inputs \(\[2, 5\] float32\).*input_shape"):
        inspect_upload(tmp_path / "m.ts", "torchscript", {"input_shape": [2, 5]})
