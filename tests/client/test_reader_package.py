"""The container outside the service (#17 item 2): `modelpress-client` installed alone into a fresh venv
(numpy + httpx, no torch) decodes real containers bitwise as the service does, and its CLI lists them."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from compression.coding.container import read_container
from compression.job.runner import run_compression_job
from compression.pipeline import parse_pipeline
from compression.registry import RECIPES
from mpclient.format.storage import round_bfloat16
from tests.helpers import make_lenet_safetensors

ROOT = Path(__file__).resolve().parents[2]
# between them every codec a LeNet job writes: sparse, codebook, huffman, bitpacked, affine (per channel and
# group-wise), sign, cast
RECIPE_NAMES = ["deep-compression", "int4-g64-huffman", "int8", "binary", "ternary", "fp16", "kmeans-4bit", "prune-50"]


@pytest.fixture(scope="module")
def reader_venv(tmp_path_factory) -> Path:
    """A venv holding only the client distribution (built from a copy: the checkout stays clean)."""
    root = tmp_path_factory.mktemp("reader")
    shutil.copytree(ROOT / "mpclient", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), str(root / "src")],
                   check=True, cwd=root, timeout=600)
    return python


def test_the_client_alone_decodes_real_containers_bitwise_as_the_service(reader_venv, tmp_path):
    weights = make_lenet_safetensors(tmp_path / "lenet.safetensors")
    expected, containers = {}, {}
    for name in RECIPE_NAMES:
        out = tmp_path / name
        run_compression_job(weights, "safetensors", {"architecture": "lenet-300-100"},
                            parse_pipeline({"stages": RECIPES[name].stages}), out, measure_latency=False)
        containers[name] = out / "model.mpz"
        expected[name] = read_container(containers[name])[0]
    codecs = {t["codec"] for c in containers.values() for t in json.loads(_manifest(c))["tensors"]}
    assert {"sparse", "affine", "sign", "cast"} <= codecs, codecs

    script = (
        "import sys, numpy as np\n"
        "from mpclient import load_state_dict\n"
        "try:\n    import torch\n    sys.exit('torch is importable in the reader venv')\n"
        "except ImportError:\n    pass\n"
        "for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):\n    np.savez(dst, **load_state_dict(src))\n")
    args = [a for name in RECIPE_NAMES for a in (str(containers[name]), str(tmp_path / f"{name}.npz"))]
    done = subprocess.run([str(reader_venv), "-c", script, *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    for name in RECIPE_NAMES:
        got = np.load(tmp_path / f"{name}.npz")
        assert sorted(got.files) == sorted(expected[name]), name
        for key, tensor in expected[name].items():
            want = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
            assert got[key].dtype == want.dtype and np.array_equal(got[key].view(np.uint8), want.view(np.uint8)), \
                (name, key)

    cli = subprocess.run([str(reader_venv.parent / "modelpress-client"), "weights", str(containers["deep-compression"]),
                          "--json", "--out", str(tmp_path / "dc.npz")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 0, cli.stderr
    listed = json.loads(cli.stdout)
    assert listed["decode_requires"] == "architecture" and listed["origin"]["architecture"] == "lenet-300-100"
    assert {t["name"] for t in listed["tensors"]} == set(expected["deep-compression"])
    assert np.load(tmp_path / "dc.npz").files


def test_a_tampered_container_is_refused_by_the_reader_too(reader_venv, tmp_path):
    weights = make_lenet_safetensors(tmp_path / "lenet.safetensors")
    run_compression_job(weights, "safetensors", {"architecture": "lenet-300-100"},
                        parse_pipeline({"stages": RECIPES["int8"].stages}), tmp_path / "o", measure_latency=False)
    data = bytearray((tmp_path / "o" / "model.mpz").read_bytes())
    data[-200] ^= 0xFF   # inside parts.bin or the zip directory: either way not a valid container any more
    (tmp_path / "bad.mpz").write_bytes(bytes(data))
    done = subprocess.run([str(reader_venv.parent / "modelpress-client"), "weights", str(tmp_path / "bad.mpz")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "bad.mpz" in done.stderr, (done.stdout, done.stderr)


def test_bfloat16_rounding_matches_torch():
    values = torch.randn(100_000) * torch.logspace(-8, 8, 100_000)
    values[:4] = torch.tensor([0.0, -0.0, 65504.0, 3.3895e38])
    mine = round_bfloat16(values.numpy())
    torch_cast = values.to(torch.bfloat16).float().numpy()
    assert np.array_equal(mine.view(np.uint32), torch_cast.view(np.uint32))


def _manifest(path: Path) -> str:
    import zipfile
    with zipfile.ZipFile(path) as zf:
        return zf.read("manifest.json").decode()
