"""The job submitted at a new service's creation event: its id written first and alone, the poll after that, the
rest of the status by the create handler."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import kopf

from aifactory.operator import aiservice
from tests.unit.test_operator_gone import FakeBridge, FakePoller


class OrderedPoller(FakePoller):
    """A poller of a cluster with no jobs yet, which notes when it is woken."""

    reachable = True

    def __init__(self, happened: list[str]):
        super().__init__()
        self.last_success = 1.0
        self.happened = happened

    async def listed(self, timeout: float) -> None:
        pass

    def wake(self) -> None:
        self.happened.append("poll")


def test_the_poll_after_a_submit_at_creation_waits_for_the_status_write(monkeypatch):
    # B1 (create -> status.jobId) went from 4.6x to 3.5x the bare submit once the poll no longer ran during the
    # status write.
    from aifactory.models import SlurmClusterSpec

    happened: list[str] = []

    class Bridge(FakeBridge):
        async def submit(self, request) -> str:
            happened.append("submit")
            return "77"

    async def patch_status(plural, namespace, name, fields) -> None:
        assert (plural, name, fields["jobId"]) == ("aiservices", "quick", "77")
        assert "conditions" not in fields and None not in fields.values()
        happened.append("status")

    found = SimpleNamespace(poller=OrderedPoller(happened), bridge=Bridge(),
                            spec=SlurmClusterSpec(url="http://slurm", working_directory="/w"))
    monkeypatch.setattr(aiservice.registry, "get", lambda name: found)
    monkeypatch.setattr(aiservice.statuswrites, "patch_status", patch_status)
    monkeypatch.setattr(aiservice.kopf, "info", lambda body, reason, message: None)
    meta = {"namespace": "default", "name": "quick", "uid": "u-quick", "generation": 1}
    try:
        asyncio.run(aiservice.aiservice_arrived_or_gone(
            type="ADDED", body={"metadata": meta}, spec={"recipe": "testing/openai-echo", "cluster": "default"},
            meta=meta, uid="u-quick", tenant_by_namespace={}))
        assert happened == ["submit", "status", "poll"]
    finally:
        aiservice._early.pop("u-quick", None)


SPEC = {"recipe": "testing/openai-echo", "cluster": "default"}
FIELDS = {"phase": "pending", "jobId": "77", "node": None, "attempts": [{"number": 1, "jobId": "77"}],
          "conditions": [{"type": "Ready", "status": "False", "reason": "Submitted"}]}


def _take(status: dict) -> tuple[dict, dict]:
    aiservice._early["u-take"] = (SimpleNamespace(job_id="77"), dict(SPEC), FIELDS)
    patch = kopf.Patch()
    seen = asyncio.run(aiservice._take_early("u-take", SPEC, status, patch))
    return dict(patch.get("status") or {}), seen


def test_the_first_write_carries_the_job_without_conditions_or_nulls():
    assert aiservice._job_first(FIELDS) == {"phase": "pending", "jobId": "77",
                                            "attempts": [{"number": 1, "jobId": "77"}]}


def test_the_create_handler_adds_the_conditions_the_first_write_left_out():
    written, seen = _take({"phase": "pending", "jobId": "77"})
    assert written == {"conditions": FIELDS["conditions"]}
    assert seen["conditions"] == FIELDS["conditions"] and seen["jobId"] == "77"


def test_the_create_handler_writes_it_all_when_the_first_write_failed():
    written, _ = _take({})
    assert written == FIELDS


def test_the_create_handler_keeps_newer_conditions_from_the_timer():
    written, _ = _take({"jobId": "77", "conditions": [{"type": "Ready", "status": "False", "reason": "Pending"}]})
    assert written == {}


def test_a_service_without_secret_env_reads_no_secret_and_makes_no_api_client(monkeypatch):
    # Making a kubernetes client copies its configuration: not worth it on the submit's path for nothing to read.
    from aifactory.models import AIServiceSpec

    def no_client():
        raise AssertionError("an API client was made")

    monkeypatch.setattr(aiservice.k8s, "CoreV1Api", no_client)
    spec = AIServiceSpec.model_validate({"recipe": "testing/openai-echo"})
    assert asyncio.run(aiservice._secret_env(spec, "default")) == {}
