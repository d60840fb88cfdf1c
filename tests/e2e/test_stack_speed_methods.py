"""The acceleration methods through the API on the real stack: structured pruning + fine-tuning on
uploaded data + int8 kernels, low-rank factorization, compact (depthwise-separable) filters and
block-circulant matrices with recovery training, each job verified and its costs measured."""
from __future__ import annotations

import torch
from safetensors.torch import save_file

from compression.formats.architectures import build_architecture
from tests.e2e.test_stack import stack  # noqa: F401 (fixture)
from tests.helpers import digits_npz, upload, upload_dataset, wait_finished


def test_structured_finetune_int8_and_low_rank_jobs(stack, tmp_path):  # noqa: F811
    client, spawn, log = stack
    spawn()
    torch.manual_seed(0)
    weights = tmp_path / "lenet5.safetensors"
    save_file({k: v.contiguous() for k, v in build_architecture("lenet-5").state_dict().items()}, str(weights))
    model = upload(client, weights, architecture="lenet-5").json()
    train = upload_dataset(client, digits_npz(tmp_path / "digits.npz", n=512, flat=False)).json()
    pipelines = {
        "structured": [{"kind": "structured_prune", "ratio": 0.5}, {"kind": "finetune", "epochs": 1},
                       {"kind": "int8"}],
        "low_rank": [{"kind": "low_rank", "energy": 0.8, "scope": "global"}],
        # the survey's compact-filter and structured-matrix families in one job, with recovery training
        "compact": [{"kind": "compact_filters", "form": "separable"},
                    {"kind": "structured_matrix", "block_size": 8, "layers": ["fc1", "fc2"]},
                    {"kind": "finetune", "epochs": 1}],
    }
    jobs = {name: client.post("/v1/jobs", json={"model_id": model["id"], "pipeline": {"stages": stages},
                                                "data": {"train": train["id"], "eval": train["id"]}}).json()
            for name, stages in pipelines.items()}
    for name, job in jobs.items():
        done = wait_finished(client, job["id"], timeout=300)
        assert done["status"] == "succeeded", (name, done, log.read_text()[-3000:])
        m = client.get(f"/v1/jobs/{job['id']}/metrics").json()["metrics"]
        assert m["parameters_after"] < m["parameters_before"] and m["macs_after"] < m["macs_before"], name
        assert m["verification"]["model.mpz"] and m["verification"]["model.safetensors"]
        kinds = {a["kind"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()}
        assert {"container", "safetensors", "torch-export"} <= kinds, (name, kinds)
        if name == "structured":
            assert "onnx-int8" in kinds and m["exports"]["int8"]
            assert [e["kind"] for e in m["evaluation"]] == [None, "structured_prune", "finetune", "int8"]
        if name == "compact":   # depthwise + pointwise convs, block-circulant fc1/fc2, both rebuilt from the record
            layers = [d["name"] for stage in m["stages"][:2] for d in stage["result"] if d["replaced"]]
            assert layers == ["conv1", "conv2", "fc1", "fc2"], m["stages"][:2]
