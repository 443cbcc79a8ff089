"""One OpenAI endpoint for every model, on the real stack, with the official `openai` client: routing by model,
streaming passed through as it comes, the demo's real model, on demand through the Slurm queue, idle shutdown,
limits with eviction."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import httpx
import openai
import pytest

MADE_KEYS: list[str] = []
SLOW = 0.4  # seconds the test double sleeps before each streamed chunk after the first


def client(stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0, timeout=120)


def running(stack, name: str, timeout: float = 180) -> dict:
    return stack.wait_for(name, lambda o: (o.get("status") or {}).get("phase") == "running", timeout,
                          what="running")


def scontrol(stack, *args: str) -> None:
    subprocess.run(["scontrol", *args], env={**stack.slurm.env(), "PATH": "/usr/bin:/bin"}, check=True)


@pytest.fixture(scope="module")
def inference_key(stack) -> str:
    key = stack.make_key("default", "inference")
    MADE_KEYS.append(key)
    return key


@pytest.fixture(scope="module")
def gateway_services(stack):
    """A slow-streaming echo service and the demo's real embeddings model, for the whole module."""
    suffix = str(int(time.time()) % 100000)
    names = {"echo": f"gw-echo-{suffix}", "emb": f"gw-emb-{suffix}"}
    stack.apply(stack.manifest(names["echo"], "testing/openai-echo", {"OPENAI_TEST_CHUNK_DELAY": str(SLOW)}))
    stack.apply(stack.manifest(names["emb"], "embeddings/minilm"))
    try:
        for name in names.values():
            running(stack, name, 300)
        yield names
    finally:
        for name in names.values():
            stack.kubectl("delete", "ais", name, "--wait=false", "--ignore-not-found", check=False)
        for name in names.values():
            stack.wait_gone(name, 90)


def test_models_chat_and_unknown_model_with_the_openai_client(stack, inference_key, gateway_services):
    ai = client(stack, inference_key)
    ids = {m.id for m in ai.models.list()}
    assert {gateway_services["echo"], gateway_services["emb"]} <= ids
    chat = ai.chat.completions.create(model=gateway_services["echo"], max_tokens=20,
                                      messages=[{"role": "user", "content": "hello through the gateway"}])
    assert chat.choices[0].message.content == "echo: hello through the gateway"
    assert chat.usage.prompt_tokens == 4
    # The id the service itself serves routes to it too.
    served = stack.get(gateway_services["echo"])["status"]["models"]
    assert served == ["aifactory-echo-test"]
    assert ai.chat.completions.create(model=served[0], messages=[{"role": "user", "content": "x"}]).choices
    with pytest.raises(openai.NotFoundError) as missing:
        ai.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        client(stack, "aif_000000000000_wrong").models.list()


def test_a_stream_arrives_chunk_by_chunk_before_the_upstream_has_finished(stack, inference_key,
                                                                         gateway_services):
    ai = client(stack, inference_key)
    words = "one two three four five six"
    started = time.monotonic()
    arrivals: list[tuple[float, str]] = []
    stream = ai.chat.completions.create(model=gateway_services["echo"], stream=True,
                                        stream_options={"include_usage": True},
                                        messages=[{"role": "user", "content": words}])
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append((time.monotonic() - started, chunk.choices[0].delta.content))
        usage = chunk.usage or usage
    assert "".join(text for _, text in arrivals) == f"echo: {words}"
    # The upstream sleeps SLOW s before each of its 9 chunks after the first: a buffering proxy would hand
    # them all over at the end. Here the first word came long before the last.
    assert arrivals[-1][0] - arrivals[0][0] >= 5 * SLOW
    assert usage is not None and usage.completion_tokens == 7
    # Counted per key, visible through the key's own listing.
    time.sleep(0.5)
    metrics = stack.api().get("/metrics").text
    assert f'aifactory_gateway_tokens_total{{namespace="default",service="{gateway_services["echo"]}",' \
           'kind="completion"}' in metrics


def test_embeddings_from_the_demos_real_model_by_name(stack, inference_key, gateway_services):
    ai = client(stack, inference_key)
    answer = ai.embeddings.create(model=gateway_services["emb"], input=["hello world", "bonjour le monde"])
    assert [len(d.embedding) for d in answer.data] == [384, 384]


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
