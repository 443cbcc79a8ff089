"""ServiceRecipe resources add recipes to the operator's catalog: real kube-apiserver, operator and Slurm."""

from __future__ import annotations

import time

import httpx
import yaml

ECHO = ["python3", "-m", "aifactory.servers.openai_test_server", "--host", "{host}", "--port", "{port}"]


def test_a_servicerecipe_can_be_deployed_and_deleting_it_removes_it(stack, services, service_recipes,
                                                                     unique_name):
    name = service_recipes(unique_name("srec"), category="e2e", runtime="native", command=ECHO,
                           healthPath="/health", startupGraceSeconds=60, openaiApi=True,
                           environment={"OPENAI_TEST_MODEL": "site-echo"},
                           resources={"cpu": 1, "memory": "256M", "timeLimit": 10, "nodes": 1})
    assert stack.recipe_status(name)["path"] == f"e2e/{name}"
    row = stack.kubectl("get", "srec", name).stdout.splitlines()
    assert row[0].split() == ["NAME", "PATH", "RUNTIME", "ACCEPTED", "AGE"]
    assert row[1].split()[:4] == [name, f"e2e/{name}", "native", "true"]

    service = services(unique_name("srec-svc"), f"e2e/{name}")
    status = stack.wait_for(service, lambda o: o.get("status", {}).get("phase") == "running", 120,
                            what="running")["status"]
    models = httpx.get(f"{status['endpoint']}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["site-echo"]  # the recipe's default env reached the service

    # The REST API serves the same merged catalog.
    listed = api_recipe_paths(stack)
    assert f"e2e/{name}" in listed and "embeddings/minilm" in listed
    with stack.api(prefix="/api/v1") as api:
        detail = api.get(f"/recipes/e2e/{name}")
    assert detail.status_code == 200 and detail.json()["environment"] == {"OPENAI_TEST_MODEL": "site-echo"}

    stack.kubectl("delete", "servicerecipe", name, "--timeout=60s")
    deadline = time.monotonic() + 30
    while f"e2e/{name}" in api_recipe_paths(stack):
        assert time.monotonic() < deadline, "the deleted ServiceRecipe is still listed by GET /recipes"
        time.sleep(0.5)
    with stack.api(prefix="/api/v1") as api:
        assert api.get(f"/recipes/e2e/{name}").status_code == 404
    late = services(unique_name("srec-late"), f"e2e/{name}")
    final = stack.wait_for(late, lambda o: o.get("status", {}).get("phase") == "failed", 30,
                           what="failed")["status"]
    assert final["message"] == f"Recipe 'e2e/{name}' not found"


def api_recipe_paths(stack) -> set[str]:
    with stack.api(prefix="/api/v1") as api:
        answer = api.get("/recipes")
    assert answer.status_code == 200, answer.text
    return {r["path"] for r in answer.json()}


def test_an_invalid_servicerecipe_says_which_field_is_wrong(stack, service_recipes, unique_name):
    # The schema the apiserver checks rejects what it can ...
    bad = stack.recipe_manifest(unique_name("srec-bad"), category="e2e", runtime="apptainer", image="https://example.org/x")
    result = stack.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert result.returncode != 0 and "spec.image" in result.stderr
    # ... and the operator the rules across fields, in the status.
    name = service_recipes(unique_name("srec-noimg"), category="e2e", runtime="apptainer")
    status = stack.recipe_status(name)
    assert status["accepted"] is False and "path" not in status
    assert status["message"].startswith(f"ServiceRecipe {name}: image:"), status


def test_a_service_not_healthy_within_the_recipes_grace_fails_with_startup_timeout(stack, services,
                                                                                    service_recipes, unique_name):
    name = service_recipes(unique_name("srec-slow"), category="e2e", runtime="native", command=ECHO,
                           startupGraceSeconds=5, resources={"cpu": 1, "memory": "256M", "timeLimit": 10})
    stack.recipe_status(name)
    service = services(unique_name("slow"), f"e2e/{name}", env={"OPENAI_TEST_STARTUP_DELAY": "600"})
    final = stack.wait_for(service, lambda o: o.get("status", {}).get("phase") == "failed", 300,
                           what="failed")["status"]
    stalled = {c["type"]: c for c in final["conditions"]}["Stalled"]
    assert stalled["reason"] == "StartupTimeout"
    assert final["message"] == "Not healthy within the recipe's start-up grace of 5s"
    failure = final["lastFailure"]
    assert failure["reason"] == "StartupTimeout" and failure["jobId"] == final["jobId"]
    tail = failure["logTail"].lower()
    assert "openai" in tail or "uvicorn" in tail, tail
