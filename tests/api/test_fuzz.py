"""Fuzz every documented operation from the OpenAPI document: no 5xx, no stack traces."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from api.app import create_app


@pytest.fixture
def api_schema(embedded_settings):
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(embedded_settings, run_reaper=False))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
    assert "Traceback" not in response.text
