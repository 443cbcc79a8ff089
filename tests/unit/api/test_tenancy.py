"""Every face of the API through one identity: open paths, 401/403/404 by tenant and role."""

from __future__ import annotations

from aifactory.api.app import OPEN_PATHS, create_app
from aifactory.api.config import ApiSettings
from tests.unit.api.memory import fresh_default_models, make_api  # noqa: F401


def test_every_route_but_the_open_ones_needs_a_key() -> None:
    # The OpenAPI document lists the key schemes of every operation whose dependencies include the key check.
    doc = create_app(ApiSettings()).openapi()
    operations = [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]
    assert len(operations) > 15
    for path, method, op in operations:
        if path in OPEN_PATHS:
            assert "security" not in op, path
        else:
            assert {"BearerKey": []} in op.get("security", []), f"{method} {path} answers without a key"


def test_open_paths_answer_without_a_key_and_the_rest_is_401() -> None:
    api = make_api()
    for path in ("/", "/health", "/docs", "/redoc", "/openapi.json"):
        assert api.client.get(path).status_code == 200, path
    for method, path in (("get", "/api/v1/services"), ("post", "/api/v1/services"), ("get", "/api/v1/recipes"),
                         ("post", "/api/v1/vllm/x/prompt"), ("get", "/api/api-keys"), ("get", "/metrics")):
        r = api.client.request(method, path, json={})
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_the_openapi_document_names_both_ways_to_send_a_key() -> None:
    doc = make_api().client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["BearerKey"]["scheme"] == "bearer"
    assert (schemes["ApiKeyHeader"]["in"], schemes["ApiKeyHeader"]["name"]) == ("header", "X-API-Key")
    op = doc["paths"]["/api/v1/services"]["get"]
    assert {"BearerKey": []} in op["security"] and {"ApiKeyHeader": []} in op["security"]
    assert "security" not in doc["paths"]["/health"]["get"]


def test_another_tenants_service_does_not_exist_and_an_admin_sees_all() -> None:
    api = make_api()
    api.store.add("mine-1", namespace="team-a", phase="running", jobId="11")
    api.store.add("theirs-1", namespace="team-b", phase="running", jobId="22")
    h = api.as_key(api.manager)
    assert [s["id"] for s in api.client.get("/api/v1/services", headers=h).json()] == ["mine-1"]
    for path in ("/api/v1/services/theirs-1", "/api/v1/services/22", "/api/v1/services/theirs-1/status",
                 "/api/v1/services/theirs-1/logs"):
        r = api.client.get(path, headers=h)
        assert (r.status_code, r.json()) == (404, {"detail": "Service not found"}), path
    assert api.client.delete("/api/v1/services/theirs-1", headers=h).status_code == 404
    assert api.store.deleted == []
    everything = api.client.get("/api/v1/services", headers=api.as_key(api.admin)).json()
    assert [s["id"] for s in everything] == ["mine-1", "theirs-1"]


def test_services_are_created_in_the_callers_tenant_and_env_values_shown_only_to_it() -> None:
    api = make_api()
    r = api.client.post("/api/v1/services", headers=api.as_key(api.manager),
                        json={"recipe_name": "openai-echo", "config": {"environment": {"TOKEN": "s3cret"}}})
    assert r.status_code == 201 and r.json()["namespace"] == "team-a"
    name = r.json()["id"]
    own = api.client.get(f"/api/v1/services/{name}", headers=api.as_key(api.manager)).json()
    assert own["config"]["environment"] == {"TOKEN": "s3cret"}
    seen_by_admin = api.client.get(f"/api/v1/services/{name}", headers=api.as_key(api.admin))
    assert seen_by_admin.json()["config"]["environment"] == {"TOKEN": "***"} and "s3cret" not in seen_by_admin.text
    assert "s3cret" not in api.client.get("/api/v1/services", headers=api.as_key(api.admin)).text


def test_an_inference_key_is_403_on_management_paths_and_may_prompt() -> None:
    api = make_api()
    api.store.add("echo-1", namespace="team-a", phase="running", jobId="5", endpoint="http://svc.test:1")
    h = api.as_key(api.inference)
    for method, path in (("get", "/api/v1/services"), ("post", "/api/v1/services"), ("get", "/api/v1/recipes"),
                         ("delete", "/api/v1/services/echo-1"), ("get", "/api/v1/services/echo-1/logs")):
        r = api.client.request(method, path, headers=h, json={"recipe_name": "openai-echo"})
        assert r.status_code == 403 and "needs management" in r.json()["detail"], (method, path)
    r = api.client.post("/api/v1/vllm/echo-1/prompt", headers=h, json={"prompt": "hi"})
    assert r.status_code == 200 and r.json()["response"] == "echo: hi"


def test_allowed_models_apply_to_prompts() -> None:
    api = make_api()
    api.store.add("echo-1", namespace="team-a", phase="running", endpoint="http://svc.test:1")
    api.store.add("echo-2", namespace="team-a", phase="running", endpoint="http://svc.test:1")
    from aifactory.models import Role
    narrow = api.as_key(api.store.add_key("team-a", Role.inference, allowed_models=["echo-1"]))
    assert api.client.post("/api/v1/vllm/echo-1/prompt", headers=narrow, json={"prompt": "hi"}).status_code == 200
    r = api.client.post("/api/v1/vllm/echo-2/prompt", headers=narrow, json={"prompt": "hi"})
    assert r.status_code == 403 and "echo-2" in r.json()["detail"]


def test_with_auth_off_every_caller_is_the_trusted_admin() -> None:
    api = make_api(auth=False)
    assert api.client.get("/api/v1/services").status_code == 200
    assert api.client.get("/api/auth/whoami").json()["role"] == "admin"
