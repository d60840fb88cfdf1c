"""Typed Python client of the modelpress API, and the `modelpress` client commands.

    from mpclient import Client
    with Client("http://127.0.0.1:8000", api_key=None) as c:
        model = c.upload_model("lenet.safetensors", architecture="lenet-300-100")
        job = c.wait(c.submit(model.id, recipe="int8").id, timeout=600)
        paths = c.download(job.id, "out/")

    from mpclient import load_state_dict     # the container's weights, numpy only (no torch)
    weights = load_state_dict("out/model.mpz")
"""
from mpclient.client import Client
from mpclient.format import ContainerError, load_state_dict, read_manifest
from mpclient.errors import ApiError, ChecksumMismatch, ConnectionFailed, ModelpressError, WaitTimeout
from mpclient.models import Artifact, DatasetInfo, Job, JobPage, Metrics, ModelInfo, Recipe

__all__ = ["Client", "ContainerError", "load_state_dict", "read_manifest", "DatasetInfo", "ApiError", "ChecksumMismatch", "ConnectionFailed", "ModelpressError", "WaitTimeout",
           "Artifact", "Job", "JobPage", "Metrics", "ModelInfo", "Recipe"]
