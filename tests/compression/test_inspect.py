"""Loading an upload once to describe it: layers by type, input signature, outputs."""
from __future__ import annotations

import torch
from safetensors.torch import save_file

import pytest

from compression.formats.architectures import build_architecture
from compression.errors import CompressionError
from compression.formats.inspect import inspect_model
from compression.job.runner import run_compression_job
from compression.pipeline import parse_pipeline
from tests.helpers import CONV_ONLY


def test_builtin_architecture_is_described_by_its_modules(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in build_architecture("small-resnet").state_dict().items()}, str(path))
    info = inspect_model(path, "safetensors", {"architecture": "small-resnet"})
    assert info["parameters"] == 77754
    assert info["layers_by_type"]["Conv2d"]["count"] == 9 and info["layers_by_type"]["Linear"]["count"] == 1
    assert info["inputs"] == [{"shape": [8, 1, 28, 28], "dtype": "float32", "dynamic_dims": [0]}]
    assert info["output_features"] == 10 and info["modules_complete"]
    assert {"name": "fc", "type": "Linear", "parameters": 650, "shapes": {"weight": [10, 64], "bias": [10]}} \
        in info["modules"]


def test_torchscript_program_keeps_its_layer_types(torchscript_file):
    info = inspect_model(torchscript_file, "torchscript", {"input_shape": [2, 3, 6, 6]})
    assert info["layers_by_type"] == {"Conv2d": {"count": 1, "parameters": 224},
                                      "Linear": {"count": 1, "parameters": 1445}}
    assert info["inputs"][0]["shape"] == [2, 3, 6, 6] and info["output_features"] == 5
    assert torch.is_grad_enabled()


def test_a_job_submitted_before_inspection_checks_module_types_after_loading(lenet_safetensors, tmp_path):
    with pytest.raises(CompressionError, match="no such layer"):
        run_compression_job(lenet_safetensors, "safetensors", {"architecture": "lenet-300-100"},
                            parse_pipeline(CONV_ONLY), tmp_path / "out")
    assert not (tmp_path / "out").exists()   # refused before any stage ran

