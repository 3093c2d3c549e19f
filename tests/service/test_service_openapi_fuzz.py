"""Schemathesis against /openapi.json of the real app: no 5xx, responses match the documented schemas.

Schemathesis' own pytest plugin does not run under this pytest, so its Hypothesis strategies are
driven with ``@given`` directly (same generators, same checks).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from service_helpers import settings_for

from vitbench.service.app import create_app


@pytest.fixture(scope="module")
def api_schema(fake_model_dir: Path) -> schemathesis.BaseSchema:
    app = create_app(settings_for(fake_model_dir), background_load=False)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_schema_lists_the_api(api_schema: schemathesis.BaseSchema) -> None:
    paths = {op.ok().path for op in api_schema.get_all_operations()}
    assert {"/detect", "/healthz", "/readyz", "/v1/models", "/v2/health/live", "/v2/health/ready"} <= paths


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_openapi_operations_never_5xx(api_schema: schemathesis.BaseSchema, mode: GenerationMode) -> None:
    statuses: list[int] = []

    @given(data=st.data())
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def run(data: st.DataObject) -> None:
        case = data.draw(api_schema.as_strategy(generation_mode=mode))
        response = case.call()
        statuses.append(response.status_code)
        assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}"
        if mode is GenerationMode.POSITIVE:
            # "binary" cannot say "a decodable image": schema-valid bytes may rightly get 415/422.
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

    run()
    assert statuses and all(s < 500 for s in statuses)
