"""model.compact.onnx (#17): a runnable file whose size tracks the compression, loaded by onnxruntime in
a process that never imports modelpress, with the job's outputs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import load_file

from compression.formats.architectures import build_architecture
from compression.job.runner import run_compression_job
from compression.pipeline import parse_pipeline
from tests.helpers import make_lenet_safetensors

RUN_WITHOUT_MODELPRESS = """
import json, sys
import numpy as np, onnxruntime as ort
x = np.load(sys.argv[2])
out = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
assert not any(m.split(".")[0] in ("compression", "api", "workers", "core", "storage") for m in sys.modules)
np.save(sys.argv[3], out)
"""


@pytest.mark.parametrize("stages, form, min_ratio", [
    ([{"kind": "quantize", "dtype": "int8", "granularity": "per_channel"}], "dequantize int8", 3.8),
    ([{"kind": "quantize", "dtype": "int4", "granularity": "per_channel"}], "dequantize int4", 7.5),
    ([{"kind": "quantize", "dtype": "int4", "group_size": 64}], "dequantize int4 blocks of 64", 6.5),
    ([{"kind": "share", "bits": 4}], "gather uint4", 7.5),
    ([{"kind": "quantize", "dtype": "fp16"}], "cast float16", 1.95),
    # bf16 values whose exponent fits float16 are float16 values too (same bytes, either cast is exact)
    ([{"kind": "quantize", "dtype": "bf16"}], ("cast bfloat16", "cast float16"), 1.95),
    ([{"kind": "quantize", "dtype": "fixed16"}], "dequantize int16", 1.95),
    ([{"kind": "quantize", "dtype": "binary"}], "dequantize int4", 7.5),   # +-1 codes, a scale per channel
    # mostly zeros: nonzero entries only (uint8 gaps, table indices), scattered into zeros in the graph
    ([{"kind": "prune", "sparsity": 0.9}, {"kind": "share", "bits": 4}, {"kind": "huffman"}], "sparse", 15),
    ([{"kind": "prune", "sparsity": 0.8}, {"kind": "share", "bits": 5, "centroid_dtype": "float16"},
      {"kind": "huffman"}], "sparse", 8),   # the deep-compression preset
    ([{"kind": "prune", "sparsity": 0.9}], "sparse", 5),   # float values per entry
])
def test_compact_onnx_is_small_and_runs_alone(tmp_path, stages, form, min_ratio):
    upload = make_lenet_safetensors(tmp_path / "lenet.safetensors")
    out = run_compression_job(upload, "safetensors", {"architecture": "lenet-300-100"},
                              parse_pipeline({"stages": stages}), tmp_path / "out", measure_latency=False)
    compact = tmp_path / "out" / "model.compact.onnx"
    info = out.metrics["exports"]["onnx_compact"]
    allowed = form if isinstance(form, tuple) else (form,)
    assert info["ok"] and {v.split(":")[0] for v in info["forms"].values()} <= set(allowed), info
    form = allowed[0]
    assert "model.compact.onnx" in {a.name for a in out.artifacts}
    assert upload.stat().st_size / compact.stat().st_size >= min_ratio
    assert out.metrics["verification"]["model.compact.onnx"]["output_max_abs_diff"] < 1e-5

    x = torch.randn(16, 1, 28, 28)
    np.save(tmp_path / "x.npy", x.numpy())
    subprocess.run([sys.executable, "-c", RUN_WITHOUT_MODELPRESS, str(compact), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, cwd=tmp_path)
    model = build_architecture("lenet-300-100")
    model.load_state_dict(load_file(str(tmp_path / "out" / "model.safetensors")))
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-4)
    ops = {n.op_type for n in onnx.load(str(compact)).graph.node}
    assert ("DequantizeLinear" in ops) == form.startswith("dequantize")
    assert ("ScatterElements" in ops) == (form == "sparse")


def test_weights_without_a_compact_form_stay_float_with_the_reason(tmp_path):
    # 70 % nonzero, all values distinct: no table, and per-entry gaps would cost more than they save
    upload = make_lenet_safetensors(tmp_path / "lenet.safetensors")
    out = run_compression_job(upload, "safetensors", {"architecture": "lenet-300-100"},
                              parse_pipeline({"stages": [{"kind": "prune", "sparsity": 0.3}]}), tmp_path / "out",
                              measure_latency=False)
    info = out.metrics["exports"]["onnx_compact"]
    assert info["ok"] is False and "model.onnx is the smallest runnable file" in info["reason"]
    assert info["forms"] == {} and set(info["float"]) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert "float32" in json.dumps(info["float"]) and "model.compact.onnx" not in {a.name for a in out.artifacts}

