"""Scale from zero through the Slurm queue, on the real stack: a request starts a stopped on-demand service (held
in the queue: 503 with Retry-After and Slurm's reason), idle shutdown, the tenant's running limit with eviction.

Its own module, run before test_openai_gateway's long-lived services: the queue test needs every CPU of the node.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.e2e.test_openai_gateway import MADE_KEYS, running, scontrol


@pytest.fixture(scope="module")
def inference_key(stack) -> str:
    key = stack.make_key("default", "inference")
    MADE_KEYS.append(key)
    return key


def chat_once(stack, key: str, model: str) -> httpx.Response:
    with httpx.Client(timeout=200, trust_env=False) as http:
        return http.post(f"{stack.api_url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                         json={"model": model, "messages": [{"role": "user", "content": "wake up"}]})


def test_on_demand_through_the_slurm_queue_then_idle_shutdown(stack, services, unique_name, inference_key):
    # Every CPU of the one node is taken, so the on-demand service's job has to queue.
    blocker = services(unique_name("blocker"), "testing/openai-echo", resources={"cpu": stack.slurm_cpus()})
    running(stack, blocker)
    name = services(unique_name("lazy"), "testing/openai-echo", stopped=True, onDemand=True, idleTimeoutMinutes=1,
                    startTimeoutSeconds=20)
    stack.wait_for(name, lambda o: (o.get("status") or {}).get("phase") == "stopped", 30, what="stopped")

    # A request starts it: a Slurm job appears; held in the queue, the request gets 503 with where it is.
    answers: list[httpx.Response] = []
    asking = threading.Thread(target=lambda: answers.append(chat_once(stack, inference_key, name)))
    asking.start()
    job_id = stack.wait_for(name, lambda o: (o.get("status") or {}).get("jobId"), 30, what="a job")["status"]["jobId"]
    scontrol(stack, "hold", job_id)
    asking.join(60)
    held = answers[0]
    assert held.status_code == 503, held.text
    assert int(held.headers["retry-after"]) >= 1
    error = held.json()["error"]
    assert error["aifactory"]["pending_reason"] == "JobHeldAdmin" and error["aifactory"]["job_id"] == job_id
    assert "queued by Slurm (reason: JobHeldAdmin)" in error["message"]
    assert stack.slurm_job(job_id)["job_state"] == "PENDING"

    # Released, with room on the node: the next request is answered once the service is healthy.
    scontrol(stack, "release", job_id)
    stack.kubectl("delete", "ais", blocker, "--wait=false")
    answered = chat_once(stack, inference_key, name)
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"]["content"] == "echo: wake up"
    status = stack.get(name)["status"]
    assert status["jobId"] == job_id and stack.slurm_job(job_id)["job_state"] == "RUNNING"
    assert stack.get(name)["spec"]["stopped"] is True  # GitOps' spec is left as written

    # No request for a minute (plus the time use is recorded to): stopped, reason Idle, the Slurm job is gone.
    idle = stack.wait_for(name, lambda o: o["status"].get("phase") == "stopped", 150, what="an idle stop")["status"]
    ready = {c["type"]: c for c in idle["conditions"]}["Ready"]
    assert ready["reason"] == "Idle" and "idle timeout" in idle["message"]
    assert stack.slurm_job(job_id)["job_state"] == "CANCELLED"
    assert idle.get("lastRequest") and idle["usage"]["requests"] >= 1


def test_over_the_tenants_limit_409_and_with_eviction_the_least_recently_used_stops(stack, unique_name):
    tenant = "gw-limits"
    stack.ensure_namespace(tenant)

    def quotas(**q):
        stack.kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "aifactory.io/v1alpha1", "kind": "Tenant", "metadata": {"name": tenant},
            "spec": {"quotas": {"maxRunningServices": 1, **q}}}))
    quotas()
    key = stack.make_key(tenant, "inference")
    MADE_KEYS.append(key)
    first, second = unique_name("first"), unique_name("second")
    try:
        for name in (first, second):
            stack.apply(stack.manifest(name, "testing/openai-echo", namespace=tenant, stopped=True, onDemand=True))
        deadline = time.monotonic() + 20
        while chat_once(stack, key, first).status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.3)  # the new key and services reach the API's watch within moments
        assert chat_once(stack, key, first).status_code == 200
        refused = chat_once(stack, key, second)
        assert refused.status_code == 409
        assert f"tenant {tenant} may run 1 services at once" in refused.json()["error"]["message"]

        quotas(evictLeastRecentlyUsed=True)
        time.sleep(1)
        answered = chat_once(stack, key, second)
        assert answered.status_code == 200, answered.text
        evicted = stack.wait_for(first, lambda o: o["status"].get("phase") == "stopped", 60, namespace=tenant,
                                 what="evicted")["status"]
        assert {c["type"]: c for c in evicted["conditions"]}["Ready"]["reason"] == "Evicted"
        assert stack.slurm_job(evicted["jobId"])["job_state"] == "CANCELLED"
    finally:
        stack.kubectl("delete", "aiservices", "--all", "-n", tenant, "--wait=false", check=False)
        for name in (first, second):
            stack.wait_gone(name, 60, namespace=tenant)
