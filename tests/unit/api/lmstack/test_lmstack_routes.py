"""Seed 004's API over the real app and Store in memory: deployments (AIServices), workers (nodes), containers."""

from __future__ import annotations

import pytest

from aifactory.slurm.nodes import GpuGres, SlurmNode
from tests.unit.api.memory import make_api
from tests.unit.api.test_node_verbs import NodesBridge, with_cluster

VM = SlurmNode("vm", "IDLE", cpus=2, cpus_allocated=1, memory_mb=22900, memory_free_mb=18000,
               boot_time=1795985995, last_contact=1795990000.0)
GPU = SlurmNode("gpu-a01", "MIXED", cpus=64, memory_mb=512000, gpus=(GpuGres("a100", 2, 1),))
DOWN = SlurmNode("old", "DOWN", ("NOT_RESPONDING",), cpus=8, memory_mb=1000, reason="Not responding")


@pytest.fixture
def api():
    api = make_api()
    with_cluster(api, NodesBridge([VM, GPU, DOWN]), gpuTypes={"a100": {"name": "NVIDIA A100", "memory": "80G"}})
    return api


def get(api, path, key=None, **params):
    return api.client.get(path, headers=api.as_key(key or api.admin), params=params)


def post(api, body, key=None):
    return api.client.post("/api/deployments", headers=api.as_key(key or api.admin), json=body)


def test_health_answers_every_seeds_shape(api):
    body = api.client.get("/health").json()
    assert body["status"] == "healthy" and body["version"] and body["service"]


def test_create_maps_backend_model_and_config_onto_the_recipe(api):
    r = post(api, {"name": "llama2-7b", "backend": "vllm", "model": "meta-llama/Llama-2-7b-chat-hf",
                   "config": {"gpu_memory_utilization": 0.9, "max_model_len": 4096, "gpus": 2}})
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == {"id", "name", "status"} and created["status"] == "pending"
    obj = api.store.services.named("llama2-7b")
    assert created["id"] == obj["metadata"]["uid"]
    assert obj["spec"]["recipe"] == "inference/vllm" and obj["spec"]["resources"] == {"gpu": 2}
    assert obj["spec"]["env"] == {"VLLM_MODEL": "meta-llama/Llama-2-7b-chat-hf", "VLLM_GPU_MEMORY_UTILIZATION": "0.9",
                                  "VLLM_MAX_MODEL_LEN": "4096"}
    d = get(api, f"/api/deployments/{created['id']}").json()
    assert (d["backend"], d["model"], d["status"]) == ("vllm", "meta-llama/Llama-2-7b-chat-hf", "pending")
    assert d["config"] == {"gpu_memory_utilization": "0.9", "max_model_len": "4096", "gpu": 2}
    assert "worker_id" in d and d["container_id"] is None


@pytest.mark.parametrize("body, words", [
    ({"name": "x", "backend": "nope", "model": "m"}, "Unknown backend 'nope'"),
    ({"name": "x", "backend": "vllm", "config": {"temperature": 1}}, "config key 'temperature'"),
    ({"name": "x", "backend": "ollama", "model": "llama3"}, "takes no model"),
    ({"name": "x", "backend": "vllm", "config": {"memory": "lots"}}, "config:"),
])
def test_bad_requests_say_what_is_wrong(api, body, words):
    r = post(api, body)
    assert r.status_code == 400 and words in r.json()["detail"], r.text
    assert api.store.services.objects() == []


def test_a_name_kubernetes_would_refuse_is_422(api):
    assert post(api, {"name": "Llama_2", "backend": "vllm"}).status_code == 422


def test_worker_id_pins_the_job_to_that_node(api):
    r = post(api, {"name": "pinned", "backend": "openai-echo", "model": "m", "worker_id": "vm"})
    assert r.status_code == 201, r.text
    spec = api.store.services.named("pinned")["spec"]
    assert (spec["cluster"], spec["nodelist"]) == ("default", "vm")
    assert get(api, "/api/deployments/pinned").json()["worker_id"] == "vm"


def test_a_deployment_pinned_to_an_offline_worker_is_503_worker_offline(api):
    r = post(api, {"name": "late", "backend": "openai-echo", "worker_id": "old"})
    assert (r.status_code, r.json()) == (503, {"detail": "Worker offline"})
    assert post(api, {"name": "late", "backend": "openai-echo", "worker_id": "gone"}).status_code == 404
    assert api.store.services.objects() == []


def known_set(api):
    api.store.add("run-a", recipe="testing/openai-echo", phase="running", jobId="11", node="vm",
                  endpoint="http://127.0.0.1:40001")["metadata"]["uid"] = "u-a"
    api.store.add("run-b", recipe="testing/openai-echo", phase="running", jobId="12", node="gpu-a01")
    api.store.add("queued", recipe="inference/vllm", phase="pending", jobId="13")
    api.store.add("broken", recipe="inference/vllm", phase="failed", message="Invalid partition name specified")
    api.store.add("theirs", recipe="inference/vllm", namespace="team-a", phase="running", jobId="14", node="vm")


def test_paging_and_filters(api):
    known_set(api)
    page = get(api, "/api/deployments", api.manager).json()
    assert page["total"] == 1 and [d["name"] for d in page["items"]] == ["theirs"]
    everything = get(api, "/api/deployments").json()
    assert everything["total"] == 5 and len(everything["items"]) == 5
    names = [d["name"] for d in everything["items"]]
    assert [d["name"] for d in get(api, "/api/deployments", skip=1, limit=2).json()["items"]] == names[1:3]
    assert get(api, "/api/deployments", skip=1, limit=2).json()["total"] == 5
    assert get(api, "/api/deployments", skip=10).json() == {"items": [], "total": 5}
    running = get(api, "/api/deployments", status="running").json()
    assert sorted(d["name"] for d in running["items"]) == ["run-a", "run-b", "theirs"] and running["total"] == 3
    assert [d["name"] for d in get(api, "/api/deployments", status="error").json()["items"]] == ["broken"]
    on_vm = get(api, "/api/deployments", worker_id="vm").json()
    assert sorted(d["name"] for d in on_vm["items"]) == ["run-a", "theirs"]
    both = get(api, "/api/deployments", worker_id="vm", status="running", limit=1).json()
    assert both["total"] == 2 and len(both["items"]) == 1
    assert get(api, "/api/deployments", limit=0).status_code == 422


def test_get_has_container_port_and_times(api):
    known_set(api)
    d = get(api, "/api/deployments/u-a").json()
    assert (d["id"], d["name"], d["container_id"], d["port"], d["worker_id"]) == ("u-a", "run-a", "11", 40001, "vm")
    assert d["created_at"] == "2026-01-01T00:00:00Z" and d["updated_at"]
    assert get(api, "/api/deployments/broken").json()["message"] == "Invalid partition name specified"
    assert get(api, "/api/deployments/theirs", api.manager).status_code == 200
    assert get(api, "/api/deployments/u-a", api.manager).status_code == 404  # another tenant's: not there


def test_delete_is_204_and_logs_answer(api):
    known_set(api)
    assert get(api, "/api/deployments/broken/logs").json() == {
        "logs": "No logs yet: the service has no Slurm job yet (Invalid partition name specified)."}
    r = api.client.delete("/api/deployments/broken", headers=api.as_key(api.admin))
    assert r.status_code == 204 and r.content == b"" and api.store.deleted == ["broken"]


def test_workers_are_the_nodes_with_their_gpus(api):
    workers = {w["id"]: w for w in get(api, "/api/workers").json()["items"]}
    assert set(workers) == {"vm", "gpu-a01", "old"}
    vm = workers["vm"]
    assert (vm["status"], vm["gpu_info"], vm["state"]) == ("online", {"count": 0, "devices": []}, "IDLE")
    assert vm["last_heartbeat"].endswith("Z")  # the read that heard from it (the cache's clock)
    assert workers["gpu-a01"]["gpu_info"] == {"count": 2, "devices": [
        {"name": "NVIDIA A100", "memory": 81920, "in_use": True}, {"name": "NVIDIA A100", "memory": 81920,
                                                                     "in_use": False}]}
    old = workers["old"]
    assert (old["status"], old["state"], old["reason"]) == ("offline", "DOWN+NOT_RESPONDING", "Not responding")


def test_worker_details_and_containers(api):
    known_set(api)
    vm = get(api, "/api/workers/vm").json()
    assert vm["system_info"]["cpu_count"] == 2 and vm["system_info"]["memory_total"] == 22900 * 1024 * 1024
    assert sorted(d["name"] for d in vm["deployments"]) == ["run-a", "theirs"]
    containers = get(api, "/api/workers/vm/containers").json()["containers"]
    assert {(c["id"], c["name"], c["status"], c["image"]) for c in containers} == {
        ("11", "run-a", "running", "native"), ("14", "theirs", "running", "docker://vllm/vllm-openai:v0.8.5")}
    assert [c["id"] for c in get(api, "/api/workers/vm/containers", api.manager).json()["containers"]] == ["14"]
    assert get(api, "/api/workers/nope").status_code == 404
    assert get(api, "/api/workers", api.inference).status_code == 403
