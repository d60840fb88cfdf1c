"""Typed Python client of the modelpress API, and the `modelpress` client commands.

    from mpclient import Client
    with Client("http://127.0.0.1:8000", api_key=None) as c:
        model = c.upload_model("lenet.safetensors", architecture="lenet-300-100")
        job = c.wait(c.submit(model.id, recipe="int8").id, timeout=600)
        paths = c.download(job.id, "out/")
"""
from mpclient.client import Client
from mpclient.errors import ApiError, ChecksumMismatch, ConnectionFailed, ModelpressError, WaitTimeout
from mpclient.models import Artifact, DatasetInfo, Job, JobPage, Metrics, ModelInfo, Recipe

__all__ = ["Client", "DatasetInfo", "ApiError", "ChecksumMismatch", "ConnectionFailed", "ModelpressError", "WaitTimeout",
           "Artifact", "Job", "JobPage", "Metrics", "ModelInfo", "Recipe"]
