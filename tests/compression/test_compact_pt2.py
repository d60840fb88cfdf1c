"""model.compact.pt2 (#17): a torch.export program holding integer codes (or codebook indices) as buffers and
rebuilding the weights in its graph; plain torch runs it, bitwise the compressed model."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from compression.formats.architectures import build_architecture
from compression.job.runner import run_compression_job
from compression.pipeline import parse_pipeline
from tests.helpers import make_lenet_safetensors

RUN_WITHOUT_MODELPRESS = """
import sys, numpy as np, torch
program = torch.export.load(sys.argv[1]).module()
out = program(torch.from_numpy(np.load(sys.argv[2])))
assert not any(m.split(".")[0] in ("compression", "api", "workers", "mpclient") for m in sys.modules)
np.save(sys.argv[3], out.detach().numpy())
"""


@pytest.mark.parametrize("stages, min_ratio", [
    ([{"kind": "quantize", "dtype": "int8"}], 3.4),
    ([{"kind": "quantize", "dtype": "int4"}], 5.5),                              # codes packed two per byte
    ([{"kind": "quantize", "dtype": "int4", "group_size": 64}, {"kind": "huffman"}], 4.5),   # groups, asymmetric
    ([{"kind": "share", "bits": 4}], 6),                                         # codebook indices
])
def test_compact_program_is_small_exact_and_runs_in_plain_torch(tmp_path, stages, min_ratio):
    upload = make_lenet_safetensors(tmp_path / "lenet.safetensors")
    out = run_compression_job(upload, "safetensors", {"architecture": "lenet-300-100"},
                              parse_pipeline({"stages": stages}), tmp_path / "out", measure_latency=False)
    info = out.metrics["exports"]["pt2_compact"]
    assert info == {"ok": True, "layers": ["fc1", "fc2", "fc3"]}, info
    compact = tmp_path / "out" / "model.compact.pt2"
    assert out.metrics["verification"][compact.name]["output_max_abs_diff"] == 0.0
    assert (tmp_path / "out" / "model.pt2").stat().st_size / compact.stat().st_size >= min_ratio

    x = torch.randn(8, 1, 28, 28)   # the program keeps the export's static batch of 8
    np.save(tmp_path / "x.npy", x.numpy())
    subprocess.run([sys.executable, "-c", RUN_WITHOUT_MODELPRESS, str(compact), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, cwd=tmp_path)
    model = build_architecture("lenet-300-100")
    model.load_state_dict(load_file(str(tmp_path / "out" / "model.safetensors")))
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    # (bitwise in the job's own check; another process may sum in another order: thread count)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)


def test_conv_layers_of_an_uploaded_program_hold_codes(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.fc = torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    torch.manual_seed(0)
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(Net().eval(), (torch.randn(2, 3, 8, 8),)), str(path))
    out = run_compression_job(path, "torch-export", {}, parse_pipeline({"stages": [{"kind": "int8"}]}),
                              tmp_path / "out", measure_latency=False)
    assert out.metrics["exports"]["pt2_compact"]["ok"] is True, out.metrics["exports"]["pt2_compact"]
    assert set(out.metrics["exports"]["pt2_compact"]["layers"]) >= {"conv", "fc"}
    program = torch.export.load(str(tmp_path / "out" / "model.compact.pt2"))
    buffers = dict(program.named_buffers())
    assert any(b.dtype == torch.int8 for b in buffers.values())
    assert not any(p.dtype == torch.float32 and p.dim() == 4 for p in program.state_dict.values())   # no float kernel
