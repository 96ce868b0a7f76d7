"""Both REST APIs against their own OpenAPI documents, fuzzed by schemathesis on real servers.

Every check schemathesis has runs (server errors, documented status codes, content types and
headers, response schemas, schema-invalid data refused, schema-valid data accepted). A case is
sent with its device's token when it names one, so valid data reaches the service; the fuzzer's
invalid bodies are refused by the schema or, without a device to sign for, by authentication.
The longer run, its command and counts: docs/benchmarks.md "REST contracts".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from protos.auth import device_token
from tests.credentials import APP_TOKENS, TOKEN_SECRET
from tests.integration.conftest import StartCloud

pytestmark = pytest.mark.integration
# per operation and mode; docs/benchmarks.md runs TANDEM_FUZZ_EXAMPLES=500
EXAMPLES = int(os.environ.get("TANDEM_FUZZ_EXAMPLES", "25"))


def device_of(case: Any) -> str | None:
    for part in (case.body, case.query):
        for name in ("device_id", "deviceId"):  # REST models; proto3 JSON (pull, push)
            if isinstance(part, dict) and isinstance(part.get(name), str):
                return str(part[name])
    return None


def fuzz(schema: Any, sign: Callable[[str], dict[str, str]], excluded: Sequence[Any] = ()) -> int:
    """Every operation, valid and invalid data, every check; fails on the first violation
    (schemathesis' report, with a curl line to reproduce it). Returns the cases sent."""
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @FUZZ
            def run(case: Any) -> None:
                nonlocal sent
                device = device_of(case)
                headers = sign(device) if device else {}
                case.call_and_validate(headers=headers, excluded_checks=list(excluded), timeout=10)
                sent += 1

            try:
                run()
            except Unsatisfiable:  # no parameters at all: there is no invalid request to make
                assert mode is GenerationMode.NEGATIVE, operation.label
    return sent


# 413 (over the body limit) refuses invalid data as surely as a 422
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [
        400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5XX",
    ]}}}
)  # fmt: skip
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)  # fmt: skip


def test_the_cloud_keeps_its_contract(start_cloud: StartCloud) -> None:
    cloud, _ = start_cloud()
    schema = schemathesis.openapi.from_url(
        f"http://127.0.0.1:{cloud.http_port}/openapi.json", config=CONFIG
    )
    sign = lambda device: {"x-device-token": device_token(TOKEN_SECRET.encode(), device)}  # noqa: E731
    # a schema-valid body may still be refused: its vectors' dims must match the served model's,
    # which JSON Schema cannot say (docs/benchmarks.md "REST contracts")
    sent = fuzz(schema, sign, excluded=[positive_data_acceptance])
    print(f"cloud: {len(list(schema.get_all_operations()))} operations, {sent} cases, 0 violations")
    assert sent > 100


def test_the_agent_keeps_its_contract(start_cloud: StartCloud, start_agent: Any) -> None:
    cloud, _ = start_cloud()
    url, _ = start_agent(cloud.grpc_port)
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=CONFIG)
    sent = fuzz(schema, APP_TOKENS.header)
    print(f"agent: {len(list(schema.get_all_operations()))} operations, {sent} cases, 0 violations")
    assert sent > 100
