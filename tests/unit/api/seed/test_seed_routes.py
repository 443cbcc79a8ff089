"""The HTTP layer of the REST API in process: routes, status codes, error bodies and the OpenAPI document.

The Kubernetes side is a stand-in store holding AIService objects (the real store is driven by the e2e tests);
service endpoints are the OpenAI test double behind httpx's ASGI transport.
"""

from __future__ import annotations

import copy
import json

import httpx
import pytest
from fastapi.testclient import TestClient
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from aifactory.servers.openai_test_server import create_app as openai_test_app
from tests.unit.api.memory import MemoryStore, fresh_default_models, make_api  # noqa: F401

# Every path and method of seed 001 (the original server's OpenAPI document).
SEED_PATHS = {
    ("get", "/"), ("get", "/health"),
    ("get", "/api/v1/recipes"), ("get", "/api/v1/recipes/{recipe_name}"),
    ("get", "/api/v1/services"), ("post", "/api/v1/services"),
    ("get", "/api/v1/services/{service_id}"), ("delete", "/api/v1/services/{service_id}"),
    ("get", "/api/v1/services/{service_id}/logs"), ("get", "/api/v1/services/{service_id}/status"),
    ("get", "/api/v1/vllm/services"), ("get", "/api/v1/vllm/{service_id}/models"),
    ("post", "/api/v1/vllm/{service_id}/prompt"),
}


def make(upstream=None) -> tuple[TestClient, MemoryStore]:
    """The API with auth off (seed 000's behaviour: one trusted user, the default tenant)."""
    api = make_api(upstream, auth=False)
    return api.client, api.store


@pytest.fixture
def api() -> TestClient:
    return make()[0]


def test_openapi_has_every_seed_path_with_request_and_response_schemas(api: TestClient) -> None:
    doc = api.get("/openapi.json").json()
    assert doc["info"]["title"] == "AI Factory Server Service"
    found = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert SEED_PATHS <= found, SEED_PATHS - found
    for method, path in SEED_PATHS:
        op = doc["paths"][path][method]
        ok = op["responses"].get("200") or op["responses"]["201"]
        assert ok["content"]["application/json"]["schema"], (method, path)
        if method == "post":
            assert op["requestBody"]["content"]["application/json"]["schema"], path
    assert "time_limit" in json.dumps(doc["components"]["schemas"]["Resources"])
    assert api.get("/docs").status_code == 200 and api.get("/redoc").status_code == 200


def test_health_and_root(api: TestClient) -> None:
    # Every seed's shape at once: 000 {status, version}, 002 {status, service, version}, 004 {status}.
    assert api.get("/health").json() == {"status": "healthy", "service": "AI Factory Server Service",
                                         "version": "0.1.0"}
    root = api.get("/").json()
    assert root["service"] == "AI Factory Server Service" and root["status"] == "running"
    assert root["docs"] == "/docs"


def test_create_answers_201_pending_and_the_service_is_listed() -> None:
    api, store = make()
    r = api.post("/api/v1/services", json={"recipe_name": "openai-echo",
                                           "config": {"environment": {"A": "1"}, "resources": {"cpu": "1"}}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("openai-echo-") and body["status"] == "pending"
    assert body["recipe_name"] == "testing/openai-echo" and body["created_at"] == "2026-01-01T00:00:00Z"
    assert body["config"]["environment"] == {"A": "1"} and body["config"]["resources"]["cpu"] == 1
    assert [s["id"] for s in api.get("/api/v1/services").json()] == [body["id"]]
    assert api.get(f"/api/v1/services/{body['id']}").json()["id"] == body["id"]


def test_unknown_recipe_is_404_with_the_seed_body(api: TestClient) -> None:
    r = api.post("/api/v1/services", json={"recipe_name": "invalid/recipe"})
    assert (r.status_code, r.json()) == (404, {"detail": "Recipe 'invalid/recipe' not found"})
    r = api.get("/api/v1/recipes/invalid/recipe")
    assert (r.status_code, r.json()) == (404, {"detail": "Recipe 'invalid/recipe' not found"})


def test_recipes_by_path_with_a_slash_and_by_bare_name(api: TestClient) -> None:
    paths = [r["path"] for r in api.get("/api/v1/recipes").json()]
    assert "testing/openai-echo" in paths
    assert api.get("/api/v1/recipes/testing/openai-echo").json()["name"] == "openai-echo"
    assert api.get("/api/v1/recipes/openai-echo").json()["path"] == "testing/openai-echo"


def test_malformed_body_is_422_naming_the_field_without_echoing_values(api: TestClient) -> None:
    r = api.post("/api/v1/services", json={"recipe_name": "openai-echo",
                                           "config": {"environment": {"TOKEN": "s3cret"}, "resources": {"cpu": "x"}}})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "config", "resources", "cpu"]
    assert "s3cret" not in r.text and "input" not in error


def test_unknown_service_is_404_everywhere(api: TestClient) -> None:
    for method, path in [("get", "/api/v1/services/nope"), ("delete", "/api/v1/services/nope"),
                         ("get", "/api/v1/services/nope/status"), ("get", "/api/v1/services/nope/logs"),
                         ("get", "/api/v1/vllm/nope/models")]:
        r = api.request(method, path)
        assert (r.status_code, r.json()) == (404, {"detail": "Service not found"}), path
    r = api.post("/api/v1/vllm/nope/prompt", json={"prompt": "hi"})
    assert (r.status_code, r.json()) == (404, {"detail": "Service not found"})


def test_delete_by_slurm_job_id_answers_the_seed_body() -> None:
    api, store = make()
    store.add("echo-1", phase="running", jobId="77")
    r = api.delete("/api/v1/services/77")
    assert (r.status_code, r.json()) == (200, {"message": "Service stopped successfully", "job_id": "77"})
    assert store.deleted == ["echo-1"]


def test_logs_before_a_job_exists_say_so() -> None:
    api, store = make()
    store.add("echo-1", phase="pending", message="Waiting for the cluster")
    body = api.get("/api/v1/services/echo-1/logs").json()
    assert body == {"logs": "No logs yet: the service has no Slurm job yet (Waiting for the cluster).",
                    "job_id": None, "attempt": None}


def test_logs_of_an_attempt_no_longer_kept_is_404_naming_the_kept_ones() -> None:
    api, store = make()
    store.add("echo-1", phase="running", jobId="12", attempts=[{"number": 11, "jobId": "11"},
                                                               {"number": 12, "jobId": "12"}])
    r = api.get("/api/v1/services/echo-1/logs?attempt=1")
    assert (r.status_code, r.json()) == (404, {"detail": "Attempt 1 is not among the service's attempts "
                                                         "(kept: 11, 12)"})
    assert api.get("/api/v1/services/echo-1/logs?attempt=0").status_code == 422


def test_prompt_to_a_running_service_and_its_models() -> None:
    api, store = make()
    store.add("echo-1", phase="running", jobId="5", endpoint="http://svc.test:1")
    r = api.post("/api/v1/vllm/echo-1/prompt", json={"prompt": "Hello, world!"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("success", "response", "model", "tokens_used", "endpoint_used", "service_id")} == {
        "success": True, "response": "echo: Hello, world!", "model": "demo", "tokens_used": 5,
        "endpoint_used": "chat", "service_id": "echo-1"}
    assert api.get("/api/v1/vllm/echo-1/models").json()["models"] == ["demo"]
    listed = api.get("/api/v1/vllm/services").json()["vllm_services"]
    assert listed == [{"id": "echo-1", "name": "echo-1", "recipe_name": "testing/openai-echo",
                       "endpoint": "http://svc.test:1", "status": "running"}]


def test_prompt_falls_back_to_completions_without_chat_template() -> None:
    api, store = make(openai_test_app("base", chat_template=False))
    store.add("echo-1", phase="running", endpoint="http://svc.test:1")
    body = api.post("/api/v1/vllm/echo-1/prompt", json={"prompt": "Hello"}).json()
    assert (body["endpoint_used"], body["response"]) == ("completions", "echo: Hello")


def test_prompt_to_a_starting_service_is_503_with_retry_after() -> None:
    api, store = make()
    store.add("echo-1", phase="starting", jobId="5", message="Job running; waiting for /health")
    r = api.post("/api/v1/vllm/echo-1/prompt", json={"prompt": "hi"})
    assert r.status_code == 503 and r.headers["retry-after"] == "7"
    assert r.json() == {"error": "Service not available",
                        "message": "The service may still be starting up. Please wait and try again.",
                        "details": "Service echo-1 is starting: Job running; waiting for /health"}


def test_prompt_while_the_model_loads_is_503_too() -> None:
    api, store = make(openai_test_app("demo", startup_delay=3600))
    store.add("echo-1", phase="running", endpoint="http://svc.test:1")
    r = api.post("/api/v1/vllm/echo-1/prompt", json={"prompt": "hi"})
    assert r.status_code == 503 and r.headers["retry-after"] == "7"
    assert "503" in r.json()["details"]


def test_prompt_to_a_failed_service_is_503_without_retry_after() -> None:
    api, store = make()
    store.add("echo-1", phase="failed", message="exit code 1")
    r = api.post("/api/v1/vllm/echo-1/prompt", json={"prompt": "hi"})
    assert r.status_code == 503 and "retry-after" not in r.headers
    assert r.json()["details"] == "Service echo-1 is failed: exit code 1"


def test_upstream_errors_are_502_with_the_upstream_status_and_words() -> None:
    api, store = make()
    store.add("echo-1", phase="running", endpoint="http://svc.test:1")
    r = api.post("/api/v1/vllm/echo-1/prompt", json={"prompt": "hi", "model": "other"})
    assert r.status_code == 502
    assert r.json() == {"error": "Upstream error", "message": "The model `other` does not exist.",
                        "upstream_status": 404, "details": None}


def test_prompt_body_needs_a_prompt() -> None:
    api, store = make()
    store.add("echo-1", phase="running", endpoint="http://svc.test:1")
    r = api.post("/api/v1/vllm/echo-1/prompt", json={"max_tokens": 5})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prompt"]


def test_a_service_whose_recipe_does_not_speak_openai_is_400() -> None:
    api, store = make()
    store.add("x-1", recipe="inference/does-not-exist", phase="running", endpoint="http://svc.test:1")
    r = api.get("/api/v1/vllm/x-1/models")
    assert r.status_code == 400 and "does not serve the OpenAI API" in r.json()["detail"]


def test_kubernetes_errors_keep_their_status_and_words() -> None:
    api, store = make()
    body = json.dumps({"kind": "Status", "message": 'AIService.aifactory.io "x" is invalid: spec.env: Invalid value',
                       "code": 422})

    async def refuse(plural: str, manifest: dict) -> dict:
        raise ApiException(status=422, reason="Unprocessable Entity", http_resp=None) from None

    store.create = refuse  # type: ignore[method-assign]
    r = api.post("/api/v1/services", json={"recipe_name": "openai-echo"})
    assert r.status_code == 400 and r.json()["detail"].startswith("Kubernetes:")

    async def refuse_with_words(plural: str, manifest: dict) -> dict:
        exc = ApiException(status=422, reason="Unprocessable Entity")
        exc.body = body
        raise exc

    store.create = refuse_with_words  # type: ignore[method-assign]
    r = api.post("/api/v1/services", json={"recipe_name": "openai-echo"})
    assert r.json() == {"detail": 'Kubernetes: AIService.aifactory.io "x" is invalid: spec.env: Invalid value'}


def test_an_unexpected_failure_is_a_500_that_hides_its_internals() -> None:
    api, store = make()
    store.fail_with = RuntimeError("token=hunter2 at /secret/path")
    r = api.get("/api/v1/services")
    assert (r.status_code, r.json()) == (500, {"detail": "Internal server error"})
    assert "hunter2" not in r.text


def test_metrics_count_requests_by_route_template_and_services_by_phase() -> None:
    api, store = make()
    store.add("a-1", phase="running")
    store.add("b-2", phase="pending")
    store.add("c-3", phase="running")
    assert api.get("/api/v1/services/a-1").status_code == 200
    assert api.get("/api/v1/services/nope").status_code == 404
    text = api.get("/metrics").text
    assert ('aifactory_api_requests_total{method="GET",route="/api/v1/services/{service_id}",status="200"} 1'
            in text)
    assert 'route="/api/v1/services/{service_id}",status="404"} 1' in text
    assert 'aifactory_services{phase="running"} 2' in text and 'aifactory_services{phase="pending"} 1' in text
    assert "/metrics" not in api.get("/openapi.json").json()["paths"]
