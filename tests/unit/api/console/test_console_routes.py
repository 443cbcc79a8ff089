"""The console's page and its JSON face, and /docs and /redoc served with no asset from elsewhere."""

from __future__ import annotations

import re

import pytest

from aifactory.slurm.nodes import GpuGres, SlurmNode
from tests.unit.api.memory import make_api
from tests.unit.api.test_node_verbs import NodesBridge, with_cluster


@pytest.fixture
def api():
    api = make_api()
    with_cluster(api, NodesBridge([SlurmNode("vm", "IDLE", cpus=2, memory_mb=22900),
                                   SlurmNode("g1", "MIXED", cpus=8, memory_mb=1000, gpus=(GpuGres("a100", 1, 1),))]),
                 gpuTypes={"a100": {"name": "NVIDIA A100", "memory": "80G"}})
    return api


def test_docs_pages_load_their_assets_from_this_server_only(api):
    for path in ("/docs", "/redoc"):
        r = api.client.get(path)
        assert r.status_code == 200
        urls = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        assert urls and all(u.startswith("/") for u in urls), urls  # no CDN, no Google fonts
        assert "default-src 'self'" in r.headers["content-security-policy"]
        for url in urls:
            if url.startswith("/docs-assets/"):
                assert api.client.get(url).status_code == 200, url
    redoc = api.client.get("/docs-assets/redoc.standalone.js")
    assert redoc.status_code == 200 and len(redoc.content) > 100_000 and b"cdn.redoc.ly" not in redoc.content


def test_the_console_page_is_open_and_asks_only_this_server(api):
    r = api.client.get("/ui")
    assert r.status_code == 200 and "<title>aifactory console</title>" in r.text
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    for url in re.findall(r'(?:src|href)="(/[^"]+)"', r.text):
        assert api.client.get(url).status_code == 200, url
    assert api.client.get("/ui/api/services").status_code == 401


def call(api, method, path, key=None, **kw):
    return api.client.request(method, path, headers=api.as_key(key or api.manager), **kw)


def test_create_from_a_recipe_with_its_settings(api):
    r = call(api, "POST", "/ui/api/services", json={
        "recipe": "inference/vllm", "name": "v1", "settings": {"model": "org/m", "max_model_len": "2048",
                                                               "gpu_memory_utilization": ""},
        "resources": {"gpu": 2, "time_limit": 60}})
    assert r.status_code == 201, r.text
    detail = r.json()
    assert detail["settings"] == {"model": "org/m", "max_model_len": "2048"} and detail["namespace"] == "team-a"
    spec = api.store.services.named("v1")["spec"]
    assert spec["env"] == {"VLLM_MODEL": "org/m", "VLLM_MAX_MODEL_LEN": "2048"}
    assert spec["resources"] == {"gpu": 2, "timeLimit": 60}
    bad = call(api, "POST", "/ui/api/services", json={"recipe": "inference/vllm", "settings": {"nope": "1"}})
    assert bad.status_code == 400 and "nope: not a setting of recipe inference/vllm" in bad.json()["detail"]


def test_services_details_conditions_and_hidden_values(api):
    obj = api.store.add("mine", namespace="team-a", phase="pending", slurmState="PENDING", pendingReason="Priority",
                        conditions=[{"type": "Scheduled", "status": "False", "reason": "Priority",
                                     "message": "queued", "lastTransitionTime": "2026-01-01T00:00:00Z"}])
    obj["spec"]["env"] = {"OPENAI_TEST_MODEL": "m", "OTHER": "x"}
    (item,) = call(api, "GET", "/ui/api/services").json()["items"]
    assert (item["name"], item["phase"], item["slurm_state"], item["pending_reason"]) == (
        "mine", "pending", "PENDING", "Priority")
    d = call(api, "GET", f"/ui/api/services/{item['id']}").json()
    assert d["conditions"][0]["reason"] == "Priority" and d["settings"] == {"model": "m"}
    assert d["environment"] == {"OTHER": "x"}
    other = call(api, "GET", f"/ui/api/services/{item['id']}", api.admin).json()  # another tenant's admin
    assert other["settings"] == {"model": "***"} and other["environment"] == {"OTHER": "***"}
    assert call(api, "DELETE", f"/ui/api/services/{item['id']}").status_code == 204


def test_recipes_with_settings_and_nodes(api):
    recipes = {r["path"]: r for r in call(api, "GET", "/ui/api/recipes").json()["items"]}
    vllm = recipes["inference/vllm"]
    assert vllm["model_setting"] == "model"
    assert {"name": "model", "env": "VLLM_MODEL", "default": "Qwen/Qwen2.5-0.5B-Instruct"}.items() <= \
        vllm["settings"][0].items()
    nodes = {n["name"]: n for n in call(api, "GET", "/ui/api/nodes").json()["items"]}
    assert nodes["vm"]["gpus"] == [] and nodes["vm"]["cpus"] == 2
    assert nodes["g1"]["gpus"] == [{"name": "NVIDIA A100", "memory_mb": 81920, "in_use": True}]
    assert call(api, "GET", "/ui/api/nodes", api.inference).status_code == 403


def test_stop_start_and_the_actions_that_apply(api):
    obj = api.store.add("svc", namespace="team-a", phase="running", jobId="7")
    uid = obj["metadata"]["uid"]
    assert call(api, "GET", f"/ui/api/services/{uid}").json()["actions"] == ["stop", "delete"]
    stopped = call(api, "POST", f"/ui/api/services/{uid}/stop")
    assert stopped.status_code == 200 and stopped.json()["stopped"] is True
    assert api.store.services.named("svc")["spec"]["stopped"] is True
    assert stopped.json()["actions"] == ["start", "delete"]
    started = call(api, "POST", f"/ui/api/services/{uid}/start")
    assert started.status_code == 200 and api.store.services.named("svc")["spec"]["stopped"] is False
    ended = api.store.add("ended", namespace="team-a", phase="failed")
    assert call(api, "GET", f"/ui/api/services/{ended['metadata']['uid']}").json()["actions"] == ["start", "delete"]


def test_the_attempts_and_the_logs_of_one_attempt(api):
    obj = api.store.add("tried", namespace="team-a", phase="running", jobId="12", attempts=[
        {"number": 1, "jobId": "11", "startedBy": "Created", "endState": "FAILED", "exitCode": 3, "reason": "ExitCode"},
        {"number": 2, "jobId": "12", "startedBy": "Restart"}])
    uid = obj["metadata"]["uid"]
    d = call(api, "GET", f"/ui/api/services/{uid}").json()
    assert [(a["number"], a["job_id"], a["started_by"], a["exit_code"], a["reason"]) for a in d["attempts"]] == [
        (1, "11", "Created", 3, "ExitCode"), (2, "12", "Restart", None, None)]
    missing = call(api, "GET", f"/ui/api/services/{uid}/logs", params={"attempt": 9})
    assert missing.status_code == 404 and missing.json()["detail"] == (
        "Attempt 9 is not among the service's attempts (kept: 1, 2)")
    assert call(api, "GET", f"/ui/api/services/{uid}/logs", params={"attempt": 0}).status_code == 422
