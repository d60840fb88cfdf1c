"""After upload a worker loads the model once (in its sandboxed child) and stores what it is; submit
uses it. Here the task's body runs in the test process, as the worker would run it."""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import CONV_ONLY, make_unloadable_torchscript, upload
from workers.inspection import run_inspection

LENET_PARAMETERS = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


def _inspect(client, model_id: str) -> dict:
    run_inspection(client.app.state.runtime, model_id)
    return client.get(f"/v1/models/{model_id}").json()


def _tiny_onnx(path, external: bool = False):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "fc.weight")
    if external:   # a path in an upload could point anywhere on the worker
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        entry = weight.external_data.add()
        entry.key, entry.value = "location", "../../../../etc/passwd"
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "fc.weight"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_upload_queues_an_inspection_and_its_result_is_stored(client, embedded_settings, lenet_file):
    body = upload(client, lenet_file).json()
    assert body["inspection_status"] == "pending" and body["inspection_error"] is None
    queued = [p.read_text() for p in (embedded_settings.broker_folder / "in").iterdir()]
    assert any("modelpress.inspect_model" in m and body["id"] in m for m in queued)   # the embedded broker

    model = _inspect(client, body["id"])
    assert model["inspection_status"] == "done"
    seen = model["summary"]["inspection"]
    assert seen["format"] == "safetensors" and seen["parameters"] == LENET_PARAMETERS
    assert seen["layers_by_type"] == {"Linear": {"count": 3, "parameters": LENET_PARAMETERS}}
    assert {"name": "fc3", "type": "Linear", "parameters": 1010, "shapes": {"weight": [10, 100], "bias": [10]}} \
        in seen["modules"]
    assert seen["inputs"] == [{"shape": [8, 1, 28, 28], "dtype": "float32", "dynamic_dims": [0]}]
    assert seen["output_features"] == 10
    assert model["summary"]["parameters"] == LENET_PARAMETERS   # the sniffed summary is kept beside it
    assert run_inspection(client.app.state.runtime, body["id"]) is None   # a redelivered message changes nothing


def test_conv_only_stage_on_an_inspected_mlp_is_422_at_submit(client, lenet_file):
    model_id = upload(client, lenet_file).json()["id"]
    assert client.post("/v1/jobs", json={"model_id": model_id, "pipeline": CONV_ONLY}).status_code == 201  # pending
    assert _inspect(client, model_id)["inspection_status"] == "done"
    resp = client.post("/v1/jobs", json={"model_id": model_id, "pipeline": CONV_ONLY})
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["detail"]
    assert error["loc"] == ["body", "pipeline"] and "no such layer" in error["msg"] and "Linear" in error["msg"]
    fine = {"stages": [{"kind": "low_rank", "energy": 0.9}]}
    assert client.post("/v1/jobs", json={"model_id": model_id, "pipeline": fine}).status_code == 201


def test_a_model_the_loader_refuses_fails_inspection_and_submit_is_422(client, tmp_path):
    body = upload(client, make_unloadable_torchscript(tmp_path / "tiny.ts"), architecture=None).json()
    assert body["inspection_status"] == "pending"
    model = _inspect(client, body["id"])
    assert model["inspection_status"] == "failed" and "input_shape" in model["inspection_error"]
    assert "Traceback" not in model["inspection_error"]
    resp = client.post("/v1/jobs", json={"model_id": body["id"], "recipe": "int8"})
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["detail"]
    assert error["loc"] == ["body", "model_id"] and "cannot be loaded" in error["msg"] and "input_shape" in error["msg"]
    assert client.get("/v1/jobs").json()["total"] == 0


def test_onnx_is_parsed_by_the_worker_not_the_api(client, tmp_path):
    resp = upload(client, _tiny_onnx(tmp_path / "tiny.onnx"), architecture=None)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["format"] == "onnx" and body["summary"]["parameters"] is None   # framing checked only
    model = _inspect(client, body["id"])
    assert model["inspection_status"] == "done"
    summary = model["summary"]
    assert summary["parameters"] == 12 and summary["weight_targets"] == ["fc.weight"] and summary["layers_complete"]
    assert summary["inspection"]["layers_by_type"] == {"Linear": {"count": 1, "parameters": 12}}
    assert summary["inspection"]["output_features"] == 3
    assert client.post("/v1/jobs", json={"model_id": body["id"], "recipe": "int8"}).status_code == 201


def test_onnx_with_external_data_fails_inspection(client, tmp_path):
    body = upload(client, _tiny_onnx(tmp_path / "ext.onnx", external=True), architecture=None).json()
    model = _inspect(client, body["id"])
    assert model["inspection_status"] == "failed" and "external data" in model["inspection_error"]
    assert client.post("/v1/jobs", json={"model_id": body["id"], "recipe": "int8"}).status_code == 422


@pytest.mark.parametrize("damage", ["truncated", "forged"])
def test_broken_onnx_is_still_refused_at_upload(client, embedded_settings, tmp_path, damage):
    import os

    data = _tiny_onnx(tmp_path / "ok.onnx").read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data[: len(data) - 5] if damage == "truncated" else data[:3] + os.urandom(2000))
    resp = upload(client, bad, architecture=None)
    assert resp.status_code == 422 and "ONNX" in resp.json()["detail"], resp.text
    assert [p for p in embedded_settings.resolved_storage_dir.rglob("*") if p.is_file()] == []


def test_a_sample_input_dataset_gives_the_example_inputs(client, tmp_path):
    """A TorchScript model with no input spec: its example inputs come from an uploaded dataset."""
    import torch

    from tests.helpers import upload_dataset

    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(6, 3)).eval())
    program = tmp_path / "tiny.ts"
    torch.jit.save(scripted, str(program))
    samples = tmp_path / "samples.npz"
    np.savez(samples, inputs=np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32))
    dataset = upload_dataset(client, samples).json()

    assert upload(client, program, architecture=None, options='{"sample_dataset": "ds_nope"}').status_code == 404
    reserved = upload(client, program, architecture=None, options='{"sample_inputs_file": ["/etc/passwd", "npz"]}')
    assert reserved.status_code == 422 and "reserved" in reserved.text
    body = upload(client, program, architecture=None, options=f'{{"sample_dataset": "{dataset["id"]}"}}').json()
    model = _inspect(client, body["id"])
    assert model["inspection_status"] == "done", model["inspection_error"]
    assert model["summary"]["inspection"]["inputs"][0]["shape"] == [8, 6]   # the first 8 samples
    resp = client.delete(f"/v1/datasets/{dataset['id']}")
    assert resp.status_code == 409 and body["id"] in resp.text


def test_the_reaper_sends_inspections_the_broker_never_got(client, embedded_settings, lenet_file):
    from sqlalchemy import update

    from storage.models import Model
    from core.reaper import reap_once

    model_id = upload(client, lenet_file).json()["id"]
    rt = client.app.state.runtime

    def sent() -> int:
        return sum("modelpress.inspect_model" in p.read_text() and model_id in p.read_text()
                   for p in (embedded_settings.broker_folder / "in").iterdir())

    assert sent() == 1
    reap_once(rt)
    assert sent() == 1   # sent moments ago: not lost yet
    with rt.sessions() as s:   # as for a model uploaded before inspections existed
        s.execute(update(Model).where(Model.id == model_id).values(inspection_enqueued_at=None))
        s.commit()
    reap_once(rt)
    assert sent() == 2
    reap_once(rt)
    assert sent() == 2
    assert _inspect(client, model_id)["inspection_status"] == "done"
