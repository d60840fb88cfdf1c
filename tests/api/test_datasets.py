"""Dataset uploads and jobs that name datasets by role (no worker runs here)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from tests.api.test_models import _stored_files
from tests.helpers import digits_npz, upload, upload_dataset


@pytest.fixture
def model_id(client, lenet_file):
    resp = upload(client, lenet_file)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


@pytest.fixture
def digits(client, tmp_path):
    resp = upload_dataset(client, digits_npz(tmp_path / "digits.npz"))
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_upload_summarises_and_lists(client, digits):
    assert digits["id"].startswith("ds_") and digits["format"] == "npz"
    summary = digits["summary"]
    assert summary["samples"] == 256 and summary["inputs"][0]["shape"] == [784]
    assert summary["labels"]["classes"] == 10
    assert client.get(f"/v1/datasets/{digits['id']}").json()["sha256"] == digits["sha256"]
    page = client.get("/v1/datasets", params={"limit": 1}).json()
    assert page["total"] == 1 and page["items"][0]["id"] == digits["id"] and page["next_offset"] is None


def test_bad_files_are_refused_and_nothing_is_stored(client, tmp_path, embedded_settings):
    pickled = tmp_path / "data.pkl"
    pickled.write_bytes(pickle.dumps({"inputs": [1, 2, 3]}))
    assert upload_dataset(client, pickled).status_code == 415
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, inputs=np.zeros((10, 4), np.float32), labels=np.zeros(9, np.int64))
    resp = upload_dataset(client, wrong)
    assert resp.status_code == 422 and "10" in resp.json()["detail"] and "9" in resp.json()["detail"]
    negative = tmp_path / "negative.npz"
    np.savez(negative, inputs=np.zeros((4, 4), np.float32), labels=np.array([0, 1, -1, 2]))
    assert upload_dataset(client, negative).status_code == 422
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(digits_npz(tmp_path / "ok.npz").read_bytes()[:5000])
    assert upload_dataset(client, truncated).status_code in (415, 422)
    assert client.get("/v1/datasets").json()["total"] == 0
    assert _stored_files(embedded_settings) == []


def test_job_with_datasets_by_role(client, model_id, digits):
    body = {"model_id": model_id, "pipeline": {"stages": [{"kind": "finetune", "epochs": 1}]},
            "data": {"train": digits["id"], "eval": digits["id"]}}
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["data"] == {"train": digits["id"], "eval": digits["id"]}


def test_training_stage_without_train_data_is_422(client, model_id, digits):
    body = {"model_id": model_id, "pipeline": {"stages": [{"kind": "finetune"}]}}
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 422 and "training data" in resp.text
    # calibration data alone does not train
    resp = client.post("/v1/jobs", json={**body, "data": {"calibration": digits["id"]}})
    assert resp.status_code == 422 and "training data" in resp.text
    # a data-driven one-shot stage takes calibration data
    gptq = {"model_id": model_id, "pipeline": {"stages": [{"kind": "gptq"}]}}
    assert client.post("/v1/jobs", json=gptq).status_code == 422
    assert client.post("/v1/jobs", json={**gptq, "data": {"calibration": digits["id"]}}).status_code == 201


def test_dataset_that_does_not_fit_the_model_is_422(client, model_id, tmp_path):
    images = upload_dataset(client, digits_npz(tmp_path / "images.npz", side=8)).json()   # [64], not [784]
    resp = client.post("/v1/jobs", json={"model_id": model_id, "pipeline": {"stages": [{"kind": "finetune"}]},
                                         "data": {"train": images["id"]}})
    assert resp.status_code == 422 and "train dataset" in resp.text, resp.text
    many = tmp_path / "many-classes.npz"
    np.savez(many, inputs=np.zeros((4, 784), np.float32), labels=np.array([0, 1, 2, 12]))
    ds = upload_dataset(client, many).json()
    resp = client.post("/v1/jobs", json={"model_id": model_id, "pipeline": {"stages": [{"kind": "finetune"}]},
                                         "data": {"train": ds["id"]}})
    assert resp.status_code == 422 and "12" in resp.text, resp.text


def test_unknown_or_foreign_dataset_is_404(client, model_id):
    resp = client.post("/v1/jobs", json={"model_id": model_id, "pipeline": {"stages": [{"kind": "finetune"}]},
                                         "data": {"train": "ds_nope"}})
    assert resp.status_code == 404 and "dataset ds_nope not found" in resp.text
    resp = client.post("/v1/jobs", json={"model_id": model_id, "recipe": "int8", "data": {"test": "ds_x"}})
    assert resp.status_code == 422


def test_delete_refused_while_a_job_uses_it(client, model_id, digits):
    job = client.post("/v1/jobs", json={"model_id": model_id, "pipeline": {"stages": [{"kind": "finetune"}]},
                                        "data": {"train": digits["id"]}}).json()
    resp = client.delete(f"/v1/datasets/{digits['id']}")
    assert resp.status_code == 409 and job["id"] in resp.text
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert client.delete(f"/v1/datasets/{digits['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{digits['id']}").status_code == 404


def test_teacher_model_for_training_stages(client, model_id, digits, tmp_path):
    from tests.helpers import make_lenet_safetensors

    teacher = upload(client, make_lenet_safetensors(tmp_path / "teacher.safetensors", seed=5)).json()
    body = {"model_id": model_id, "pipeline": {"stages": [{"kind": "finetune"}]}, "data": {"train": digits["id"]},
            "teacher_model_id": teacher["id"]}
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["teacher_model_id"] == teacher["id"]
    resp = client.post("/v1/jobs", json={**body, "pipeline": {"stages": [{"kind": "quantize", "dtype": "int8"}]}})
    assert resp.status_code == 422 and "training stages" in resp.text
    assert client.post("/v1/jobs", json={**body, "teacher_model_id": "mdl_nope"}).status_code == 404


def test_dataset_over_the_cap_is_413_and_nothing_is_stored(embedded_settings, tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app

    small = embedded_settings.model_copy(update={"max_dataset_bytes": 4096})
    with TestClient(create_app(small, run_reaper=False)) as client:
        resp = upload_dataset(client, digits_npz(tmp_path / "big.npz"))
        assert resp.status_code == 413 and "MODELPRESS_MAX_DATASET_BYTES" in resp.text
        assert _stored_files(small) == []
