"""The operator's timer acts once on an ended job, even when kopf hands it the same (stale) status again: with a
thousand services after a restart, watch events lag behind the status patches, and each stale tick posted another
"Cancelled" event and patched the status again (2,425 events for 1,000 cancelled jobs)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import kopf
import pytest

from aifactory.operator import aiservice
from aifactory.slurm.jobs import SlurmJob


class FakePoller:
    reachable = True
    last_success = 1.0
    last_error = None

    def __init__(self, job: SlurmJob):
        self._job = job

    def job(self, job_id: str) -> SlurmJob | None:
        return self._job if job_id == self._job.job_id else None

    def remember(self, job: SlurmJob) -> None:
        pass

    def wake(self) -> None:
        pass


class FakeBridge:
    async def log_tail(self, job: SlurmJob, lines: int) -> str:
        return "last words\n"


@pytest.fixture
def cancelled_cluster(monkeypatch):
    job = SlurmJob(job_id="41", state="CANCELLED", reason="None", exit_code=0, start_time=1, end_time=2,
                   comment="aifactory:uid=u-1")
    cluster = SimpleNamespace(poller=FakePoller(job), bridge=FakeBridge(),
                              spec=SimpleNamespace(working_directory="/tmp"))
    monkeypatch.setattr(aiservice.registry, "get", lambda name: cluster)
    events: list[tuple[str, str]] = []
    monkeypatch.setattr(kopf, "warn", lambda body, reason, message: events.append(("warn", reason)))
    monkeypatch.setattr(kopf, "info", lambda body, reason, message: events.append(("info", reason)))
    yield events
    for memo in (aiservice._fences, aiservice._locks):
        memo.pop("u-1", None)


def _tick(status: dict) -> dict:
    patch = kopf.Patch()
    spec = {"recipe": "testing/openai-echo", "cluster": "default"}
    meta = {"namespace": "default", "name": "echo", "generation": 1}
    asyncio.run(aiservice.aiservice_observe(body={"metadata": meta}, spec=spec, meta=meta, status=status,
                                            uid="u-1", patch=patch, tenant_by_namespace={}))
    return dict(patch.status or {})


def test_an_ended_job_is_acted_on_once_while_kopf_still_hands_the_old_status(cancelled_cluster):
    stale = {"phase": "running", "jobId": "41", "node": "vm", "endpoint": "http://127.0.0.1:1"}
    first = _tick(dict(stale))
    assert first["phase"] == "cancelled"
    assert cancelled_cluster == [("warn", "Cancelled")]
    assert _tick(dict(stale)) == {}  # the watch has not brought the patch yet: nothing again
    assert cancelled_cluster == [("warn", "Cancelled")]


def test_a_status_patch_that_never_shows_lets_the_timer_act_again(cancelled_cluster):
    # A fence must not freeze a service for good when its patch was lost (a refused write, a restart of kopf's
    # watch): after FENCE_SECONDS the timer trusts the status it is handed again.
    stale = {"phase": "running", "jobId": "41", "node": "vm", "endpoint": "http://127.0.0.1:1"}
    _tick(dict(stale))
    written, until = aiservice._fences["u-1"]
    aiservice._fences["u-1"] = (written, until - aiservice.FENCE_SECONDS - 1)  # as if a minute had passed
    assert _tick(dict(stale))["phase"] == "cancelled"
