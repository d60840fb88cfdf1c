"""Request ids in responses and log lines, and the API key scheme in OpenAPI (#20)."""
from __future__ import annotations

import io
import json
import logging
import logging.config

from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.logs import RequestIdMiddleware, log_config


def test_request_ids_are_echoed_made_when_absent_and_in_every_log_line():
    stream = io.StringIO()
    config = log_config("json")
    config["handlers"]["stderr"]["stream"] = stream
    config["root"] = {"handlers": [], "level": "INFO"}
    config["loggers"] = {"modelpress.test": {"handlers": ["stderr"], "level": "INFO", "propagate": False}}
    logging.config.dictConfig(config)   # on a test logger only: pytest's own handlers stay on the root
    app = FastAPI()
    app.add_middleware(RequestIdMiddleware)

    @app.get("/work")
    def work():
        logging.getLogger("modelpress.test").info("working")
        return {}

    with TestClient(app) as client:
        given = client.get("/work", headers={"X-Request-ID": "pipeline-42.step_3"})
        made = client.get("/work")
        hostile = client.get("/work", headers={"X-Request-ID": "x\" injected=1" + "a" * 200})
    assert given.headers["x-request-id"] == "pipeline-42.step_3"
    assert len(made.headers["x-request-id"]) == 32
    assert hostile.headers["x-request-id"] != "x\" injected=1" + "a" * 200   # replaced, not echoed
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == [given.headers["x-request-id"], made.headers["x-request-id"],
                                                      hostile.headers["x-request-id"]]
    assert all(line["message"] == "working" and line["level"] == "INFO" for line in lines)


def test_the_service_answers_with_a_request_id_and_declares_its_key_scheme(client):
    resp = client.get("/v1/jobs", headers={"X-Request-ID": "abc"})
    assert resp.headers["x-request-id"] == "abc"
    spec = client.get("/openapi.json").json()
    scheme = spec["components"]["securitySchemes"]["ApiKey"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for path, method in (("/v1/jobs", "get"), ("/v1/models", "post"), ("/v1/jobs/{job_id}", "delete")):
        assert spec["paths"][path][method]["security"] == [{"ApiKey": []}], (path, method)
    assert "security" not in spec["paths"]["/healthz"]["get"]
