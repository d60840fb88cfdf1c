"""Uploads: formats detected from content, bad input refused with a clear 4xx and nothing left behind."""
from __future__ import annotations

import pickle

from tests.helpers import upload


def _stored_files(settings):
    root = settings.resolved_storage_dir
    return [p for p in root.rglob("*") if p.is_file()]


def test_upload_safetensors_returns_format_and_summary(client, lenet_file):
    resp = upload(client, lenet_file)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["format"] == "safetensors"
    assert body["id"].startswith("mdl_")
    assert body["summary"]["parameters"] == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert body["size_bytes"] == lenet_file.stat().st_size
    assert client.get(f"/v1/models/{body['id']}").json()["sha256"] == body["sha256"]
    listing = client.get("/v1/models").json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == body["id"]


def test_garbage_upload_is_415_and_nothing_stored(client, embedded_settings, tmp_path):
    junk = tmp_path / "model.safetensors"  # the extension lies; content decides
    junk.write_bytes(b"this is not a model at all" * 100)
    resp = upload(client, junk)
    assert resp.status_code == 415, resp.text
    assert _stored_files(embedded_settings) == []
    assert client.get("/v1/models").json()["total"] == 0


def test_pickle_is_refused_without_unpickling(client, embedded_settings, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps(Evil()))
    resp = upload(client, bad)
    assert resp.status_code == 422
    assert "state_dict" in resp.json()["detail"] or "export" in resp.json()["detail"]
    assert not marker.exists()
    assert _stored_files(embedded_settings) == []


def test_oversize_upload_is_413(embedded_settings, lenet_file):
    from fastapi.testclient import TestClient

    from api.app import create_app

    small = embedded_settings.model_copy(update={"max_upload_bytes": 1000})
    with TestClient(create_app(small, run_reaper=False)) as c:
        resp = upload(c, lenet_file)
    assert resp.status_code == 413
    assert _stored_files(embedded_settings) == []


def test_bare_weights_need_a_known_architecture(client, lenet_file):
    resp = upload(client, lenet_file, architecture=None)
    assert resp.status_code == 422
    resp = upload(client, lenet_file, architecture="no-such-net")
    assert resp.status_code == 422 and "lenet-300-100" in resp.json()["detail"]


def test_wrong_architecture_for_the_weights_is_422(client, lenet_file):
    assert upload(client, lenet_file, architecture="lenet-5").status_code == 422


def test_not_multipart_or_missing_file(client):
    assert client.post("/v1/models", content=b"raw", headers={"content-type": "application/octet-stream"}).status_code == 415
    assert client.post("/v1/models", data={"architecture": "lenet-300-100"},
                       files={"other": ("x", b"y")}).status_code == 422


def test_unknown_form_field_and_bad_options(client, lenet_file):
    assert upload(client, lenet_file, colour="blue").status_code == 422
    assert upload(client, lenet_file, options="{not json").status_code == 422


def test_unknown_model_is_404(client):
    assert client.get("/v1/models/mdl_nope").status_code == 404


def test_list_pagination(client, lenet_file, tmp_path):
    from tests.helpers import make_lenet_safetensors

    for seed in range(3):
        assert upload(client, make_lenet_safetensors(tmp_path / f"m{seed}.safetensors", seed)).status_code == 201
    page = client.get("/v1/models", params={"limit": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2 and page["next_offset"] == 2
    rest = client.get("/v1/models", params={"limit": 2, "offset": 2}).json()
    assert len(rest["items"]) == 1 and rest["next_offset"] is None


def _hf_zip(tmp_path, name: str, members: dict[str, bytes]):
    import zipfile

    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            info = zipfile.ZipInfo("x")
            info.filename = member   # written as given, like a hostile tool would
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


def test_minilm_folder_upload_is_summarised(embedded_settings, tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.helpers import zip_minilm

    path = zip_minilm(tmp_path / "minilm.pt")   # the extension lies; content decides
    big = embedded_settings.model_copy(update={"max_upload_bytes": 200 << 20})
    with TestClient(create_app(big, run_reaper=False)) as c:
        resp = upload(c, path, architecture=None)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    s = body["summary"]
    assert body["format"] == "hf-folder"
    assert s["model_type"] == "bert" and s["architectures"] == ["BertModel"] and s["layers_count"] == 6
    assert s["parameters"] == 22_713_216 and s["hidden_size"] == 384 and "tokenizer.json" in s["tokenizer"]


def test_hostile_archives_are_4xx_and_nothing_stored(client, embedded_settings, tmp_path):
    import json

    config = json.dumps({"model_type": "bert", "vocab_size": 8, "hidden_size": 4}).encode()
    weights = b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 14
    cases = {
        "traversal.zip": {"m/config.json": config, "m/model.safetensors": weights, "../evil": b"x"},
        "absolute.zip": {"config.json": config, "model.safetensors": weights, "/tmp/evil": b"x"},
        "remote-code.zip": {"config.json": json.dumps({"model_type": "bert", "auto_map": {"AutoModel": "x.Y"}}).encode(),
                            "model.safetensors": weights},
        "no-weights.zip": {"config.json": config},
        "bad-weights.zip": {"config.json": config, "model.safetensors": b"\xff" * 32},
        "bomb.zip": {"config.json": config, "model.safetensors": weights, "zeros.bin": bytes(64 << 20)},
    }
    for name, members in cases.items():
        resp = upload(client, _hf_zip(tmp_path, name, members), architecture=None)
        assert resp.status_code == 422, (name, resp.text)
        assert resp.json()["detail"], name
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(_hf_zip(tmp_path, "t.zip", cases["no-weights.zip"]).read_bytes()[:40])
    assert upload(client, truncated, architecture=None).status_code == 415
    assert client.get("/healthz").status_code == 200
    assert _stored_files(embedded_settings) == []
    assert client.get("/v1/models").json()["total"] == 0
    assert not (tmp_path.parent / "evil").exists()


def test_onnx_upload_is_detected_and_summarised(client, tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "fc.weight")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "fc.weight"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [weight])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    resp = upload(client, path, architecture=None)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["format"] == "onnx" and body["summary"]["format"] == "onnx"
    assert body["inspection_status"] == "pending"   # the graph is parsed by the worker (tests/api/test_inspection.py)


def test_bare_weights_with_a_transformers_config(client, embedded_settings, tmp_path):
    """safetensors + config.json (no folder): transformers builds the model from its own code."""
    import json

    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    weights = tmp_path / "bert.safetensors"
    save_file({k: v.contiguous() for k, v in BertModel(cfg).state_dict().items()}, str(weights))
    resp = upload(client, weights, architecture=None, config=json.dumps(cfg.to_dict()))
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["summary"]["hf_model_type"] == "bert" and body["summary"]["layers_complete"]
    job = client.post("/v1/jobs", json={"model_id": body["id"], "recipe": "int8"})
    assert job.status_code == 201, job.text

    wrong = cfg.to_dict() | {"hidden_size": 32, "intermediate_size": 64}
    resp = upload(client, weights, architecture=None, config=json.dumps(wrong))
    assert resp.status_code == 422 and "wrong shape" in resp.json()["detail"]
    remote = cfg.to_dict() | {"auto_map": {"AutoModel": "evil.Model"}}
    resp = upload(client, weights, architecture=None, config=json.dumps(remote))
    assert resp.status_code == 422 and "auto_map" in resp.json()["detail"]
    assert upload(client, weights, architecture=None, config="{nope").status_code == 422
    assert client.get("/v1/models").json()["total"] == 1
