"""model-ct.zip (#17): a compressed-tensors Hugging Face folder that plain transformers loads in a process
that never imports modelpress, holding the job's own int4 codes for the Linear layers."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from compression.job.runner import run_compression_job
from compression.pipeline import parse_pipeline

CONFIG = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 128, "hidden_size": 64,
          "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 64}
IDS = [[2, 17, 33, 90, 5, 3], [2, 44, 8, 3, 0, 0]]


@pytest.fixture(scope="module")
def bert_zip(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    from transformers import AutoModel, BertConfig

    torch.manual_seed(0)
    model = AutoModel.from_config(BertConfig(**{k: v for k, v in CONFIG.items() if k != "model_type"})).eval()
    folder = tmp_path_factory.mktemp("bert")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    path = folder / "bert.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bert/config.json", json.dumps(CONFIG))
        zf.write(folder / "model.safetensors", "bert/model.safetensors")
    return path, model


def _pooled(model, ids: list[list[int]]) -> np.ndarray:
    x = torch.tensor(ids)
    mask = (x != 0).long()
    with torch.no_grad():
        hidden = model(input_ids=x, attention_mask=mask).last_hidden_state
    return ((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).numpy()


LOADER = """
import json, sys, zipfile, tempfile, torch
from transformers import AutoModel
with tempfile.TemporaryDirectory() as tmp:
    zipfile.ZipFile(sys.argv[1]).extractall(tmp)
    model = AutoModel.from_pretrained(tmp + "/model").eval()
    x = torch.tensor(json.loads(sys.argv[2])); mask = (x != 0).long()
    with torch.no_grad():
        h = model(input_ids=x, attention_mask=mask).last_hidden_state
    pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert not any(m.split(".")[0] in ("compression", "mpclient", "api", "workers") for m in sys.modules)
    print(json.dumps(pooled.tolist()))
"""


def test_symmetric_int4_job_yields_a_folder_transformers_loads_without_modelpress(bert_zip, tmp_path):
    path, original = bert_zip
    stages = [{"kind": "quantize", "dtype": "int4", "group_size": 32, "symmetric": True}]
    out = run_compression_job(path, "hf-folder", {}, parse_pipeline({"stages": stages}), tmp_path / "o",
                              measure_latency=False)
    ct = out.metrics["exports"]["hf_compressed_tensors"]
    assert ct["ok"] is True and ct["linear_weights_bitwise_equal"] is True, ct
    assert ct["linear_layers"] == 2 * 6 + 1   # q, k, v, attention output, intermediate, output per layer; pooler
    folder = tmp_path / "o" / "model-ct.zip"
    assert any(a.name == folder.name and a.kind == "hf-compressed-tensors" for a in out.artifacts)
    dense = (tmp_path / "o" / "model.safetensors").stat().st_size
    weights = sum(i.file_size for i in zipfile.ZipFile(folder).infolist() if i.filename.endswith(".safetensors"))
    assert weights < dense / 3   # int4 Linear codes, float8 embeddings (they were 4-bit in the job)
    card = zipfile.ZipFile(folder).read("model/README.md").decode()
    assert "compressed-tensors" in card and "output_mean_cosine" in card

    done = subprocess.run([sys.executable, "-c", LOADER, str(folder), json.dumps(IDS)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    want = _pooled(original, IDS)
    cosine = (loaded * want).sum(1) / np.linalg.norm(loaded, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() > 0.9, cosine


def test_an_asymmetric_grid_gets_no_folder_and_says_why(bert_zip, tmp_path):
    path, _ = bert_zip
    stages = [{"kind": "quantize", "dtype": "int4", "group_size": 32, "symmetric": False}]
    out = run_compression_job(path, "hf-folder", {}, parse_pipeline({"stages": stages}), tmp_path / "o",
                              measure_latency=False)
    ct = out.metrics["exports"]["hf_compressed_tensors"]
    assert ct["ok"] is False and "symmetric" in ct["reason"]
    assert not (tmp_path / "o" / "model-ct.zip").exists()
