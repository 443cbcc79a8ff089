"""Schema-driven requests (schemathesis, from /openapi.json) against the API over the real kube-apiserver: no 5xx.

POST /services really creates AIServices, so this app lists and creates them in its own namespace (api-fuzz);
they are deleted afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from aifactory.api.app import create_app
from aifactory.api.config import ApiSettings
from aifactory.devstack.stack import NAMESPACE

FUZZ_NAMESPACE = "api-fuzz"


@pytest.fixture(scope="module")
def fuzzed_app(stack) -> Iterator:
    # Namespaces cannot be deleted on the local apiserver (no controller-manager): this one is reused.
    stack.kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": FUZZ_NAMESPACE}}))
    app = create_app(ApiSettings(kubeconfig=str(stack.kube.kubeconfig), namespace=FUZZ_NAMESPACE,
                                 operator_namespace=NAMESPACE))
    with TestClient(app):  # runs the lifespan: the store watches, and is closed at the end
        yield app
    stack.kubectl("delete", "aiservices", "--all", "-n", FUZZ_NAMESPACE, "--wait=false", check=False)
    left = stack.kubectl("get", "aiservices", "-n", FUZZ_NAMESPACE, "-o", "name").stdout.split()
    for name in left:
        stack.wait_gone(name.split("/")[-1], 60, namespace=FUZZ_NAMESPACE)


@pytest.fixture(scope="module")
def api_schema(fuzzed_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_the_schema_allows_gets_a_server_error(case) -> None:
    # Not checked: negative_data_rejection (numbers given as strings, as the seed's clients send them, are meant
    # to be accepted) and allow_header_conformance (Starlette's 405 names only the methods of one route).
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance])
