"""Seed 004 (LMStack) on the real stack: deployments are AIServices run as Slurm jobs, workers are the Slurm nodes,
a worker's containers are the jobs on it. A tenant of its own keeps the known set apart from other tests'."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

TENANT = "lmstack-e2e"
MADE_KEYS: list[str] = []  # read by test_zz_no_key_left_in_plain_text
FINISHED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


@pytest.fixture(scope="module")
def lmstack(stack) -> Iterator[httpx.Client]:
    stack.ensure_namespace(TENANT)
    key = stack.make_key(TENANT, "management")
    MADE_KEYS.append(key)
    with stack.api(key) as client:
        yield client
        for item in client.get("/api/deployments", params={"limit": 1000}).json()["items"]:
            client.delete(f"/api/deployments/{item['id']}")
        until(lambda: client.get("/api/deployments").json()["total"] == 0, 120, "every deployment gone")


def until(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def status_of(client: httpx.Client, deployment_id: str, wanted: str, timeout: float = 180) -> dict:
    def reached():
        d = client.get(f"/api/deployments/{deployment_id}").json()
        if d["status"] == "error" and wanted != "error":
            raise AssertionError(f"{d['name']} failed: {d.get('message')}")
        return d if d["status"] == wanted else None
    return until(reached, timeout, f"deployment {deployment_id} {wanted}")


def scontrol_node(stack) -> dict[str, str]:
    text = stack.slurm._run(["scontrol", "show", "node", stack.slurm.node_name, "--oneliner"]).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def test_paging_and_each_filter_against_a_known_set(stack, lmstack):
    node = stack.slurm.node_name
    made = {}
    for name, body in {
        "echo-1": {"backend": "openai-echo", "model": "echo-model-1", "worker_id": node},
        "echo-2": {"backend": "openai-echo", "model": "echo-model-2", "worker_id": node},
        # More memory than the node has: Slurm refuses the job at submit, in its words.
        "broken-1": {"backend": "openai-echo", "config": {"memory": "100T"}, "worker_id": node},
        "broken-2": {"backend": "openai-echo", "config": {"memory": "100T"}},
    }.items():
        r = lmstack.post("/api/deployments", json={"name": name, **body})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == name and r.json()["status"] == "pending"
        made[name] = r.json()["id"]
    for name in ("echo-1", "echo-2"):
        status_of(lmstack, made[name], "running")
    for name in ("broken-1", "broken-2"):
        broken = status_of(lmstack, made[name], "error")
        assert broken["container_id"] is None and broken["message"]

    everything = lmstack.get("/api/deployments").json()
    ids = [d["id"] for d in everything["items"]]
    assert everything["total"] == 4 and sorted(ids) == sorted(made.values())
    assert [(d["created_at"], d["name"]) for d in everything["items"]] == sorted(  # oldest first, then by name
        (d["created_at"], d["name"]) for d in everything["items"])
    for skip, limit in ((0, 1), (1, 2), (3, 5), (4, 1)):
        page = lmstack.get("/api/deployments", params={"skip": skip, "limit": limit}).json()
        assert [d["id"] for d in page["items"]] == ids[skip:skip + limit] and page["total"] == 4
    running = lmstack.get("/api/deployments", params={"status": "running"}).json()
    assert sorted(d["name"] for d in running["items"]) == ["echo-1", "echo-2"] and running["total"] == 2
    assert {d["model"] for d in running["items"]} == {"echo-model-1", "echo-model-2"}
    errors = lmstack.get("/api/deployments", params={"status": "error"}).json()
    assert sorted(d["name"] for d in errors["items"]) == ["broken-1", "broken-2"]
    assert lmstack.get("/api/deployments", params={"status": "stopped"}).json() == {"items": [], "total": 0}
    on_node = lmstack.get("/api/deployments", params={"worker_id": node}).json()
    assert sorted(d["name"] for d in on_node["items"]) == ["broken-1", "echo-1", "echo-2"]
    both = lmstack.get("/api/deployments", params={"worker_id": node, "status": "running", "limit": 1}).json()
    assert both["total"] == 2 and len(both["items"]) == 1
    for deployment_id in made.values():
        assert lmstack.delete(f"/api/deployments/{deployment_id}").status_code == 204
    until(lambda: lmstack.get("/api/deployments").json()["total"] == 0, 120, "the known set gone")


def test_a_deployment_runs_as_a_slurm_job_on_a_worker_and_goes(stack, lmstack):
    r = lmstack.post("/api/deployments", json={
        "name": "minilm", "backend": "minilm", "model": "sentence-transformers/all-MiniLM-L6-v2", "config": {}})
    assert r.status_code == 201, r.text
    deployment_id = r.json()["id"]
    d = status_of(lmstack, deployment_id, "running", timeout=300)
    job_id = d["container_id"]
    assert job_id and stack.slurm_job(job_id)["job_state"] == "RUNNING"
    assert d["worker_id"] == stack.slurm.node_name and isinstance(d["port"], int)
    assert d["backend"] == "minilm" and d["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert d["created_at"] <= d["updated_at"]
    assert lmstack.get(f"/api/deployments/{d['name']}").json()["id"] == deployment_id  # same thing by name

    logs = lmstack.get(f"/api/deployments/{deployment_id}/logs", params={"lines": 50}).json()["logs"]
    assert "embeddings server for all-MiniLM-L6-v2" in logs
    short = lmstack.get(f"/api/deployments/{deployment_id}/logs", params={"lines": 1}).json()["logs"]
    assert len(short.strip().splitlines()) <= 4  # the last line of each of stdout and stderr, with their headers

    slurm = scontrol_node(stack)
    workers = {w["id"]: w for w in lmstack.get("/api/workers").json()["items"]}
    worker = workers[stack.slurm.node_name]
    assert worker["status"] == "online" and worker["last_heartbeat"]
    assert worker["gpu_info"] == {"count": 0, "devices": []}  # no GPU here, none invented
    detail = lmstack.get(f"/api/workers/{stack.slurm.node_name}").json()
    assert detail["system_info"]["cpu_count"] == int(slurm["CPUTot"])
    assert detail["system_info"]["memory_total"] == int(slurm["RealMemory"]) * 1024 * 1024
    assert deployment_id in [x["id"] for x in detail["deployments"]]
    containers = lmstack.get(f"/api/workers/{stack.slurm.node_name}/containers").json()["containers"]
    assert {"id": job_id, "name": "minilm", "status": "running", "image": "native"} in containers

    assert lmstack.delete(f"/api/deployments/{deployment_id}").status_code == 204
    until(lambda: lmstack.get(f"/api/deployments/{deployment_id}").status_code == 404, 120, "the deployment gone")
    job = stack.slurm_job(job_id)
    assert job is None or job["job_state"] in FINISHED, job  # Slurm's job is gone (ended, or forgotten)
    containers = lmstack.get(f"/api/workers/{stack.slurm.node_name}/containers").json()["containers"]
    assert job_id not in [c["id"] for c in containers]


def test_a_down_node_reads_offline_and_refuses_deployments(stack, lmstack):
    node = stack.slurm.node_name

    def worker_status() -> str:
        return next(w for w in lmstack.get("/api/workers").json()["items"] if w["id"] == node)["status"]

    stack.slurm._run(["scontrol", "update", f"nodename={node}", "state=down", "reason=lmstack e2e"])
    try:
        until(lambda: worker_status() == "offline", 60, f"{node} offline")
        worker = lmstack.get(f"/api/workers/{node}").json()
        assert worker["state"].startswith("DOWN") and worker["reason"] == "lmstack e2e"
        r = lmstack.post("/api/deployments", json={"name": "too-late", "backend": "openai-echo", "worker_id": node})
        assert (r.status_code, r.json()) == (503, {"detail": "Worker offline"})
        assert lmstack.get("/api/deployments").json()["total"] == 0
    finally:
        stack.slurm._run(["scontrol", "update", f"nodename={node}", "state=resume"])
    until(lambda: worker_status() == "online", 60, f"{node} online again")
