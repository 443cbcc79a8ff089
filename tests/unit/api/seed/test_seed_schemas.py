"""The REST API's pure parts: service ids, manifests, and the mapping from AIService resources to responses."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from aifactory.api.aiservices import aiservice_manifest, availability, find_service, service_name
from aifactory.api.seed.schemas import (
    RecipeResponse,
    ServiceRequest,
    ServiceResources,
    ServiceResponse,
    ServiceStatusResponse,
)
from aifactory.models import AIServiceSpec, Recipe, Resources
from aifactory.recipes import Catalog

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def recipe(name: str = "vllm", category: str = "inference") -> Recipe:
    return Recipe(name=name, category=category, runtime="native", command=["serve"], openai_api=True)


def aiservice(name: str = "vllm-3f9c2a", status: dict | None = None, **meta) -> dict:
    return {"apiVersion": "aifactory.io/v1alpha1", "kind": "AIService",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2026-01-02T03:04:05Z", **meta},
            "spec": {"recipe": "inference/vllm", "env": {"VLLM_MODEL": "gpt2"},
                     "resources": {"cpu": 8, "memory": "32G", "timeLimit": 60}},
            **({"status": status} if status is not None else {})}


def test_service_name_is_the_recipe_name_and_a_unique_dns_label_suffix() -> None:
    names = {service_name(recipe()) for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert re.fullmatch(r"vllm-[0-9a-f]{6}", name), name
    assert service_name(recipe(), "3f9c2a") == "vllm-3f9c2a"


def test_service_name_of_a_long_recipe_name_stays_a_dns_label() -> None:
    name = service_name(recipe("a" * 60 + "-b"))
    assert len(name) <= 63 and DNS_LABEL.match(name), name


def test_the_seed_request_body_is_accepted_with_its_strings_and_snake_case() -> None:
    req = ServiceRequest.model_validate({
        "recipe_name": "inference/vllm",
        "config": {"environment": {"VLLM_MODEL": "Qwen/Qwen2.5-0.5B-Instruct", "VLLM_MAX_MODEL_LEN": "2048"},
                   "resources": {"cpu": "8", "memory": "32G", "gpu": "1", "time_limit": 60}}})
    assert req.config.resources.model_dump() == {"cpu": 8, "memory": "32G", "gpu": 1, "time_limit": 60,
                                                 "nodes": None}
    # A CPU-only client sends gpu null or "".
    assert ServiceResources(gpu="").gpu is None
    assert ServiceRequest.model_validate({"recipe_name": "inference/vllm"}).config.environment == {}


@pytest.mark.parametrize("body, field", [
    ({}, "recipe_name"),
    ({"recipe_name": "x", "config": {"resources": {"cpu": "lots"}}}, "cpu"),
    ({"recipe_name": "x", "config": {"resources": {"memory": "a lot"}}}, "memory"),
    ({"recipe_name": "x", "config": {"environment": {"1BAD": "v"}}}, "environment"),
    ({"recipe_name": "x", "config": {"resources": {"timeLimit": 5}}}, "timeLimit"),
])
def test_a_malformed_request_names_the_field(body: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        ServiceRequest.model_validate(body)
    assert field in str(err.value)


def test_the_rest_resources_are_the_models_resources_with_python_names() -> None:
    assert set(ServiceResources.model_fields) == set(Resources.model_fields)
    schema = ServiceResources.model_json_schema()
    assert "time_limit" in schema["properties"] and "timeLimit" not in schema["properties"]
    assert schema["properties"]["cpu"] == Resources.model_json_schema()["properties"]["cpu"]


def test_manifest_is_a_valid_aiservice_in_kubernetes_spelling() -> None:
    req = ServiceRequest.model_validate({"recipe_name": "vllm", "config": {
        "environment": {"VLLM_MODEL": "it's \"quoted\" $(x)"}, "resources": {"cpu": "2", "time_limit": 5}}})
    manifest = aiservice_manifest("vllm-000001", "team-a", recipe(), req.config.environment,
                                  Resources(**req.config.resources.model_dump()))
    assert manifest["metadata"]["name"] == "vllm-000001" and manifest["metadata"]["namespace"] == "team-a"
    assert manifest["spec"] == {"recipe": "inference/vllm", "env": {"VLLM_MODEL": "it's \"quoted\" $(x)"},
                                "secretEnv": {}, "resources": {"cpu": 2, "timeLimit": 5}, "cluster": "default"}
    AIServiceSpec.model_validate(manifest["spec"])


def test_service_response_of_a_new_resource_is_pending_with_its_config() -> None:
    out = ServiceResponse.of(aiservice()).model_dump()
    assert out["id"] == out["name"] == "vllm-3f9c2a"
    assert out["recipe_name"] == "inference/vllm" and out["status"] == "pending"
    assert out["created_at"] == "2026-01-02T03:04:05Z"
    assert out["config"] == {"environment": {"VLLM_MODEL": "gpt2"},
                             "resources": {"cpu": 8, "memory": "32G", "gpu": None, "time_limit": 60, "nodes": None},
                             "partition": None, "account": None, "qos": None, "cluster": "default"}
    assert out["job_id"] is None and out["endpoint"] is None


def test_service_and_status_response_of_a_running_resource() -> None:
    obj = aiservice(status={"phase": "running", "jobId": "42", "node": "mel2106", "slurmState": "RUNNING",
                            "endpoint": "http://10.0.0.5:8000", "message": "Service is answering"})
    out = ServiceResponse.of(obj)
    assert (out.status.value, out.job_id, out.node, out.endpoint) == ("running", "42", "mel2106",
                                                                       "http://10.0.0.5:8000")
    assert ServiceStatusResponse.of(obj).model_dump() == {
        "status": "running", "slurm_state": "RUNNING", "job_id": "42", "node": "mel2106",
        "message": "Service is answering", "pending_reason": None, "expected_start": None, "last_failure": None,
        "restart_count": None, "next_attempt_time": None, "attempts": []}


def test_a_failed_service_shows_its_last_failure_and_attempts_in_python_names() -> None:
    obj = aiservice(status={"phase": "failed", "jobId": "44", "restartCount": 2, "attempts": [
        {"number": 3, "jobId": "44", "cluster": "default", "node": "vm", "endState": "FAILED", "exitCode": 3,
         "reason": "ExitCode"}],
        "lastFailure": {"reason": "ExitCode", "message": "The job failed with exit code 3", "exitCode": 3,
                        "time": "2026-11-29T21:00:00Z", "jobId": "44", "logTail": "bye"}})
    out = ServiceStatusResponse.of(obj).model_dump()
    assert out["last_failure"] == {"reason": "ExitCode", "message": "The job failed with exit code 3",
                                   "exit_code": 3, "time": "2026-11-29T21:00:00Z", "job_id": "44", "log_tail": "bye"}
    assert out["attempts"][0]["end_state"] == "FAILED" and out["attempts"][0]["number"] == 3
    assert out["restart_count"] == 2
    assert ServiceResponse.of(obj).last_failure.reason == "ExitCode"


def test_a_queued_service_says_slurms_reason_and_expected_start() -> None:
    obj = aiservice(status={"phase": "pending", "jobId": "43", "slurmState": "PENDING",
                            "pendingReason": "Resources", "expectedStart": "2026-11-29T21:34:31Z"})
    for out in (ServiceStatusResponse.of(obj), ServiceResponse.of(obj)):
        assert (out.pending_reason, out.expected_start) == ("Resources", "2026-11-29T21:34:31Z")


def test_a_resource_being_deleted_says_so() -> None:
    obj = aiservice(status={"phase": "running", "jobId": "42"}, deletionTimestamp="2026-01-02T03:05:00Z")
    assert ServiceStatusResponse.of(obj).message.startswith("Stopping")
    assert availability(obj) == (None, "Service vllm-3f9c2a is being stopped", False)


def test_a_resource_with_a_spec_the_model_rejects_is_still_shown() -> None:
    obj = aiservice()
    obj["spec"]["resources"] = {"cpu": "many"}
    out = ServiceResponse.of(obj)
    assert out.id == "vllm-3f9c2a" and out.config.resources.cpu is None


def test_find_service_by_name_or_by_slurm_job_id() -> None:
    a = aiservice("a", {"jobId": "7"})
    b = aiservice("7", {"jobId": "8"})
    c = aiservice("c", {"jobId": "9"})
    assert find_service([a, b, c], "c") is c
    assert find_service([a, b, c], "9") is c
    # A name wins over a job id.
    assert find_service([a, b, c], "7") is b
    assert find_service([a, b, c], "nope") is None
    assert find_service([aiservice("x")], "") is None


@pytest.mark.parametrize("status, expected", [
    ({"phase": "running", "endpoint": "http://n:1"}, ("http://n:1", "", True)),
    ({}, (None, "Service vllm-3f9c2a is pending", True)),
    ({"phase": "starting", "message": "loading"}, (None, "Service vllm-3f9c2a is starting: loading", True)),
    ({"phase": "failed", "message": "exit code 1"}, (None, "Service vllm-3f9c2a is failed: exit code 1", False)),
    ({"phase": "cancelled"}, (None, "Service vllm-3f9c2a is cancelled", False)),
])
def test_availability_for_prompts(status: dict, expected: tuple) -> None:
    assert availability(aiservice(status=status)) == expected


def test_recipe_response_has_the_seed_fields_and_the_defaults() -> None:
    out = RecipeResponse.of(Catalog().get("testing/openai-echo")).model_dump(mode="json")
    assert {k: out[k] for k in ("name", "category", "path")} == {
        "name": "openai-echo", "category": "testing", "path": "testing/openai-echo"}
    assert out["description"] and out["version"] and out["openai_api"] is True
    assert out["resources"]["time_limit"] == 30 and "timeLimit" not in out["resources"]


def test_a_stopped_service_reads_cancelled_in_the_seeds_words():
    from aifactory.api.seed.schemas import ServiceResponse, ServiceStatusResponse

    obj = {"metadata": {"name": "s", "namespace": "default"}, "spec": {"recipe": "testing/openai-echo"},
           "status": {"phase": "stopped", "message": "Stopped after 5 min without a request (idle timeout)"}}
    assert ServiceStatusResponse.of(obj).status.value == "cancelled"
    assert ServiceResponse.of(obj).status.value == "cancelled"
