"""The seed's REST API over HTTP against a real uvicorn server process, real kube-apiserver and real Slurm."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from aifactory.devstack.stack import NAMESPACE

RECIPE = "testing/openai-echo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(stack) -> Iterator[str]:
    """`aifactory api` as its own process on a free port, with the stack's kubeconfig; stopped by its pid."""
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(stack.kube.kubeconfig), "AIFACTORY_API_NAMESPACE": "default",
           "AIFACTORY_API_OPERATOR_NAMESPACE": NAMESPACE, "AIFACTORY_API_RETRY_AFTER_SECONDS": "5"}
    proc = subprocess.Popen([sys.executable, "-m", "aifactory", "api", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the API exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not answer /health within 30s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def api(stack, server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server}/api/v1", timeout=60, trust_env=False,
                      headers={"X-API-Key": stack.api_key}) as client:
        yield client


@pytest.fixture
def api_services(stack, api) -> Iterator[list[str]]:
    """Ids of services a test creates through the API; whatever is left is deleted afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        stack.kubectl("delete", "aiservice", name, "--wait=false", "--ignore-not-found", check=False)
    for name in made:
        stack.wait_gone(name, 60)


def wait_status(api: httpx.Client, service_id: str, wanted: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = api.get(f"/services/{service_id}/status").json()
        if status["status"] in wanted:
            return status
        assert status["status"] not in ("failed", "cancelled", "completed"), status
        time.sleep(0.5)
    raise AssertionError(f"{service_id}: never {wanted}; last status {status}")


def test_the_seed_python_example_runs_a_service_on_slurm(stack, server, api, api_services, capsys) -> None:
    # Seed 000's Python example, with the test recipe for inference/vllm, and the key it now needs.
    key = {"Authorization": f"Bearer {stack.api_key}"}
    response = httpx.post(f"{server}/api/v1/services", json={
        "recipe_name": RECIPE, "config": {"environment": {"OPENAI_TEST_MODEL": "gpt2"}}}, headers=key, timeout=30)
    assert response.status_code == 201, response.text
    service = response.json()
    service_id = service["id"]
    api_services.append(service_id)
    assert service["status"] == "pending" and service["name"] == service_id
    assert service_id.startswith("openai-echo-")

    # Seen at once by a GET, and by kubectl as an AIService.
    assert api.get(f"/services/{service_id}").json()["recipe_name"] == RECIPE
    assert stack.get(service_id)["spec"]["env"] == {"OPENAI_TEST_MODEL": "gpt2"}

    while True:
        status = httpx.get(f"{server}/api/v1/services/{service_id}/status", headers=key, timeout=10).json()
        if status["status"] == "running":
            break
        assert status["status"] in ("pending", "building", "starting"), status
        time.sleep(1)

    response = httpx.post(f"{server}/api/v1/vllm/{service_id}/prompt", json={"prompt": "Hello, world!"},
                          headers=key, timeout=60)
    print(response.json()["response"])
    assert capsys.readouterr().out == "echo: Hello, world!\n"
    body = response.json()
    assert body["model"] == "gpt2" and body["endpoint_used"] == "chat" and body["tokens_used"] == 5

    # The status names the job Slurm runs, on this node.
    job_id = status["job_id"]
    assert status["slurm_state"] == "RUNNING" and status["node"] == stack.slurm.node_name
    assert stack.slurm_job(job_id)["job_state"] == "RUNNING"
    assert stack.get(service_id)["status"]["jobId"] == job_id
    # The seed's ids were job ids: they still work.
    assert api.get(f"/services/{job_id}").json()["id"] == service_id
    assert api.get(f"/vllm/{service_id}/models").json()["models"] == ["gpt2"]
    assert service_id in [s["id"] for s in api.get("/vllm/services").json()["vllm_services"]]

    logs = api.get(f"/services/{service_id}/logs", params={"lines": 50}).json()
    assert logs["job_id"] == job_id
    assert f"starting {RECIPE}" in logs["logs"] and "OpenAI test double serving model gpt2" in logs["logs"]

    # Delete through the API cancels the Slurm job; the resource goes once Slurm confirms.
    response = api.delete(f"/services/{service_id}")
    assert response.json() == {"message": "Service stopped successfully", "job_id": job_id}
    stack.wait_gone(service_id, 60)
    assert stack.slurm_job(job_id)["job_state"] == "CANCELLED"
    deadline = time.monotonic() + 10
    while api.get(f"/services/{service_id}").status_code != 404:
        assert time.monotonic() < deadline, "the deleted service is still listed"
        time.sleep(0.2)


def test_a_service_made_with_kubectl_is_served_and_falls_back_to_completions(stack, services, unique_name,
                                                                             api) -> None:
    name = services(unique_name("nochat"), RECIPE, env={"OPENAI_TEST_NO_CHAT_TEMPLATE": "1"})
    deadline = time.monotonic() + 10
    while name not in [s["id"] for s in api.get("/services").json()]:
        assert time.monotonic() < deadline, f"{name} made with kubectl never listed by the API"
        time.sleep(0.2)
    assert api.get(f"/services/{name}").json()["config"]["environment"] == {"OPENAI_TEST_NO_CHAT_TEMPLATE": "1"}

    wait_status(api, name, {"running"}, 180)
    body = api.post(f"/vllm/{name}/prompt", json={"prompt": "once upon a time", "max_tokens": 3}).json()
    assert body["success"] is True and body["endpoint_used"] == "completions"
    assert body["response"] == "echo: once upon"


def test_prompt_while_the_service_starts_is_503_with_retry_after(stack, api, api_services) -> None:
    created = api.post("/services", json={"recipe_name": RECIPE,
                                          "config": {"environment": {"OPENAI_TEST_STARTUP_DELAY": "60"}}})
    assert created.status_code == 201, created.text
    service_id = created.json()["id"]
    api_services.append(service_id)

    # Before the job runs there is no output yet, and no endpoint to prompt.
    early = api.get(f"/services/{service_id}/logs").json()
    assert early["logs"].startswith("No logs yet"), early

    status = wait_status(api, service_id, {"starting"}, 180)
    assert status["job_id"]
    response = api.post(f"/vllm/{service_id}/prompt", json={"prompt": "Hello!"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    body = response.json()
    assert body["error"] == "Service not available"
    assert body["message"] == "The service may still be starting up. Please wait and try again."
    assert body["details"].startswith(f"Service {service_id} is starting")
    assert api.get(f"/vllm/{service_id}/models").status_code == 503

    assert api.delete(f"/services/{service_id}").status_code == 200
    stack.wait_gone(service_id, 60)
    assert stack.slurm_job(status["job_id"])["job_state"] == "CANCELLED"


def test_unknown_ids_and_recipes_are_404(api) -> None:
    for method, path in [("GET", "/services/no-such-service"), ("GET", "/services/999999/status"),
                         ("GET", "/services/no-such-service/logs"), ("DELETE", "/services/no-such-service"),
                         ("GET", "/vllm/no-such-service/models")]:
        response = api.request(method, path)
        assert (response.status_code, response.json()) == (404, {"detail": "Service not found"}), path
    response = api.post("/vllm/no-such-service/prompt", json={"prompt": "hi"})
    assert (response.status_code, response.json()) == (404, {"detail": "Service not found"})
    response = api.post("/services", json={"recipe_name": "invalid/recipe"})
    assert (response.status_code, response.json()) == (404, {"detail": "Recipe 'invalid/recipe' not found"})
    assert api.get("/recipes/inference/vllm").json()["path"] == "inference/vllm"
    assert api.get("/recipes/no/such").status_code == 404
