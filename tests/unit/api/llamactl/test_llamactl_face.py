"""llamactl's face (seed 003) over the real app and Store (in memory)."""

from __future__ import annotations

from aifactory.lifecycle import ACTION_ANNOTATION
from tests.unit.api.memory import fresh_default_models, make_api  # noqa: F401


def test_instance_lifecycle_in_llamactls_words():
    api = make_api()
    h = api.as_key(api.manager)
    created = api.client.post("/api/v1/instances/my-model", headers=h,
                              json={"recipe": "testing/openai-echo", "model": "my-echo", "on_demand_start": True,
                                    "idle_timeout": 5})
    assert created.status_code == 201, created.text
    assert (created.json()["name"], created.json()["status"]) == ("my-model", "starting")
    obj = api.store.service("team-a", "my-model")
    assert obj["spec"]["env"] == {"OPENAI_TEST_MODEL": "my-echo"}
    assert (obj["spec"]["onDemand"], obj["spec"]["idleTimeoutMinutes"]) == (True, 5)
    listed = api.client.get("/api/v1/instances", headers=h).json()
    assert [i["name"] for i in listed] == ["my-model"] and set(listed[0]) == {"name", "status", "created"}
    assert isinstance(listed[0]["created"], int)
    taken = api.client.post("/api/v1/instances/my-model", headers=h, json={"recipe": "testing/openai-echo"})
    assert taken.status_code == 409 and "already exists" in taken.json()["error"]

    stopped = api.client.post("/api/v1/instances/my-model/stop", headers=h)
    assert stopped.json()["status"] == "stopping"
    assert api.store.service("team-a", "my-model")["spec"]["stopped"] is True
    started = api.client.post("/api/v1/instances/my-model/start", headers=h)
    assert started.json()["status"] == "starting"
    obj = api.store.service("team-a", "my-model")
    assert obj["spec"]["stopped"] is False and obj["metadata"]["annotations"][ACTION_ANNOTATION].startswith("start@")
    restarted = api.client.post("/api/v1/instances/my-model/restart", headers=h)
    assert restarted.json()["status"] == "restarting"
    assert api.store.service("team-a", "my-model")["metadata"]["annotations"][ACTION_ANNOTATION].startswith(
        "restart@")

    updated = api.client.put("/api/v1/instances/my-model", headers=h, json={"model": "other", "idle_timeout": 9})
    assert updated.status_code == 200, updated.text
    obj = api.store.service("team-a", "my-model")
    assert obj["spec"]["env"] == {"OPENAI_TEST_MODEL": "other"} and obj["spec"]["idleTimeoutMinutes"] == 9

    assert api.client.delete("/api/v1/instances/my-model", headers=h).status_code == 204
    assert api.store.deleted == ["my-model"]


def test_errors_are_llamactls_shape_and_keys_are_checked():
    api = make_api()
    missing = api.client.get("/api/v1/instances/nope", headers=api.as_key(api.manager))
    assert (missing.status_code, missing.json()) == (404, {"error": "Instance nope not found"})
    assert api.client.get("/api/v1/instances").json()["error"].startswith("Missing API key")
    forbidden = api.client.get("/api/v1/instances", headers=api.as_key(api.inference))
    assert forbidden.status_code == 403 and "error" in forbidden.json()
    assert api.client.get("/api/v1/instances/x/proxy/health", headers=api.as_key(api.inference)).status_code == 403


def test_proxy_strips_the_prefix_and_is_503_when_not_running():
    api = make_api()
    h = api.as_key(api.manager)
    api.store.services.put(api.store._stamp({"metadata": {"name": "up", "namespace": "team-a"},
                                             "spec": {"recipe": "testing/openai-echo"},
                                             "status": {"phase": "running", "endpoint": "http://n:1"}}))
    health = api.client.get("/api/v1/instances/up/proxy/health", headers=h)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    models = api.client.get("/api/v1/instances/up/proxy/v1/models", headers=h)
    assert models.json()["data"][0]["id"] == "demo"
    api.store.services.put(api.store._stamp({"metadata": {"name": "down", "namespace": "team-a"},
                                             "spec": {"recipe": "testing/openai-echo"},
                                             "status": {"phase": "stopped"}}))
    down = api.client.get("/api/v1/instances/down/proxy/health", headers=h)
    assert down.status_code == 503 and "not running" in down.json()["error"]


def test_logs_are_plain_text_and_system_paths_say_what_serves():
    api = make_api()
    h = api.as_key(api.manager)
    api.store.services.put(api.store._stamp({"metadata": {"name": "fresh", "namespace": "team-a"},
                                             "spec": {"recipe": "testing/openai-echo"}, "status": {}}))
    logs = api.client.get("/api/v1/instances/fresh/logs?lines=50", headers=h)
    assert logs.headers["content-type"].startswith("text/plain") and "No logs yet" in logs.text
    version = api.client.get("/api/v1/version", headers=h)
    assert version.text.startswith("Version: aifactory ")
    served = api.client.get("/api/v1/server/version", headers=h).text
    assert "inference/vllm" in served and "vllm/vllm-openai" in served
    assert "testing/openai-echo" in api.client.get("/api/v1/server/help", headers=h).text
