"""RestBridge replaying slurmrestd exchanges through an httpx MockTransport: the real recordings of Slurm 22.05,
24.11 and 26.05 in every API version they serve (and the constructed v0.0.39). Checks what goes on the wire and
what the bridge makes of the answers."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from aifactory.devstack.slurm import RELEASES
from aifactory.slurm.errors import SlurmAuthError, SlurmError, SlurmUnreachable
from aifactory.slurm.jobs import JobRequest
from aifactory.slurm.rest import RestBridge
from aifactory.slurm.tokens import StaticToken
from recorded import CONSTRUCTED, exchange, folder, recorded_sets, set_id

SECRET = "eyJhbGciOiJIUzI1NiJ9.secret-token-value"
REAL = recorded_sets()


class Replay:
    """Answers each request with the recorded exchanges for its method and path (the query aside), in order;
    the last one again once they are used up. `refuse_token` answers that many requests with the recorded refusal
    of a bad token."""

    def __init__(self, release: str, version: str, script: dict[str, list[str]]):
        self.release, self.version = release, version
        self.answers: dict[tuple[str, str], list[dict]] = {}
        for name in ["openapi", *script.get("extra", [])]:
            self._add(name)
        for name in script.get("sequence", []):
            self._add(name)
        self.seen: list[httpx.Request] = []
        self.refuse_token = 0

    def _add(self, name: str) -> None:
        recorded = exchange(self.release, self.version, name)
        key = (recorded["request"]["method"], recorded["request"]["path"].split("?")[0])
        self.answers.setdefault(key, []).append(recorded)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if self.refuse_token and request.url.path != "/openapi/v3":
            self.refuse_token -= 1
            refused = exchange(self.release, self.version, "jobs_bad_token")
            return httpx.Response(refused["status"], json=refused["body"])
        queue = self.answers.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(599, text=f"no recording for {request.method} {request.url.path}")
        recorded = queue.pop(0) if len(queue) > 1 else queue[0]
        body = recorded["body"]
        return httpx.Response(recorded["status"], content=b"" if body is None else json.dumps(body).encode(),
                              headers={"content-type": "application/json"})


def bridge(replay: Replay, pinned: str | None = None, tokens=None) -> RestBridge:
    return RestBridge("http://slurmrestd.test:6820", "root", tokens or StaticToken(SECRET), api_version=pinned,
                      transport=httpx.MockTransport(replay))


def run(coro):
    return asyncio.run(coro)


def job_ids(release: str, version: str) -> tuple[str, str]:
    running = exchange(release, version, "job_running")["body"]["jobs"][0]["job_id"]
    failed = exchange(release, version, "job_failed")["body"]["jobs"][0]["job_id"]
    return str(running), str(failed)


@pytest.mark.parametrize("release,version", REAL, ids=[set_id(*s) for s in REAL])
def test_detect_submit_follow_list_and_cancel(release, version):
    replay = Replay(release, version, {"sequence": ["job_submit", "job_running", "job_cancelled", "jobs",
                                                    "jobs_not_modified"],
                                       "extra": ["job_failed", "job_unknown", "job_delete", "node"]})
    running_id, failed_id = job_ids(release, version)
    recorded = exchange(release, version, "job_submit")["request"]["body"]
    job = recorded["job"]
    script = recorded.get("script") or job["script"]
    environment = job["environment"] if isinstance(job["environment"], dict) else \
        dict(e.split("=", 1) for e in job["environment"])

    # Detection picks the newest version the server lists; the older ones are pinned, as a SlurmCluster can.
    newest = version == RELEASES[release].api_version

    async def scenario():
        b = bridge(replay, pinned=None if newest else version)
        request = JobRequest(name=job["name"], script=script, environment=environment,
                             working_directory=job["current_working_directory"], standard_output="",
                             standard_error="", time_limit_minutes=10)
        job_id = await b.submit(request)
        running = await b.job(running_id)
        cancelled = await b.job(running_id)
        failed = await b.job(failed_id)
        unknown = await b.job("999999")
        changed = await b.jobs(since=1795439081)
        unchanged = await b.jobs(since=1795439085)
        await b.cancel(running_id)
        address = await b.node_address(running.batch_host)
        await b.close()
        return b, job_id, running, cancelled, failed, unknown, changed, unchanged, address

    b, job_id, running, cancelled, failed, unknown, changed, unchanged, address = run(scenario())
    assert b.api_version == version
    assert job_id == running_id
    assert running.state == "RUNNING" and running.comment == f"hello-{running_id}"
    assert cancelled.state == "CANCELLED" and cancelled.finished
    assert (failed.state, failed.exit_code) == ("FAILED", 3)
    assert unknown is None  # 22.05: 500 "Invalid job id specified"; later: 404
    assert running_id in {j.job_id for j in changed.jobs}
    assert unchanged.jobs is None  # 304 on 22.05; 200 with no jobs from 24.11 on
    assert address == "127.0.0.1"

    sent = [(r.method, r.url.path) for r in replay.seen]
    assert (sent[0] == ("GET", "/openapi/v3")) == newest
    assert ("DELETE", f"/slurm/{version}/job/{running_id}") in sent
    polls = [r for r in replay.seen if r.url.path.endswith("/jobs")]
    update_times = [r.url.params["update_time"] for r in polls]
    if version in ("v0.0.40", "v0.0.41"):
        assert all(t.startswith("now-") for t in update_times)  # the integer is refused there (422)
    else:
        assert update_times == ["1795439081", "1795439085"]
    for request in replay.seen:
        assert request.headers["X-SLURM-USER-TOKEN"] == SECRET
    submit = next(r for r in replay.seen if r.method == "POST")
    assert json.loads(submit.content) == recorded  # exactly what was sent to the real server
    assert b.requests_sent == len(replay.seen)


def pinned_sets():
    """Detection picks the newest version a server lists; pin the older ones to replay them."""
    return [pytest.param(r, v, id=set_id(r, v)) for r, v in REAL]


@pytest.mark.parametrize("release,version", pinned_sets())
def test_each_version_pinned(release, version):
    replay = Replay(release, version, {"sequence": ["job_running"]})
    running_id, _ = job_ids(release, version)

    async def scenario():
        b = bridge(replay, pinned=version)
        return await b.job(running_id), b

    job, b = run(scenario())
    assert job.state == "RUNNING" and b.api_version == version
    assert [r.url.path for r in replay.seen] == [f"/slurm/{version}/job/{running_id}"]


@pytest.mark.parametrize("release,version", REAL, ids=[set_id(*s) for s in REAL])
def test_rejected_submits_carry_slurms_words(release, version):
    replay = Replay(release, version, {"extra": ["job_submit_bad_partition"]})

    async def scenario():
        b = bridge(replay, pinned=version)
        with pytest.raises(SlurmError) as bad:
            await b.submit(JobRequest(name="x", script="#!/bin/bash\ntrue\n", environment={"A": "1"},
                                      working_directory="/tmp", standard_output="", standard_error="",
                                      partition="no-such-partition"))
        return bad.value

    error = run(scenario())
    assert "Invalid partition name specified" in str(error) and not isinstance(error, SlurmUnreachable)
    assert SECRET not in str(error)


@pytest.mark.parametrize("release,version", REAL, ids=[set_id(*s) for s in REAL])
def test_a_job_slurm_took_is_a_job_whatever_else_it_says(release, version):
    # 22.05 answers a job no node can run now with 200, its job id and an error (2015); 26.05 with warnings; 24.11
    # refuses it (500, 2014). Taking 22.05's answer for a refusal left the job queued forever with nobody to
    # cancel it.
    replay = Replay(release, version, {"extra": ["job_submit_too_big"]})
    recorded = exchange(release, version, "job_submit_too_big")["body"]

    async def scenario():
        b = bridge(replay, pinned=version)
        request = JobRequest(name="x", script="#!/bin/bash\ntrue\n", environment={"A": "1"},
                             working_directory="/tmp", standard_output="", standard_error="", cpus_per_task=64)
        try:
            return await b.submit(request)
        except SlurmError as exc:
            return exc

    outcome = run(scenario())
    if recorded.get("job_id"):
        assert outcome == str(recorded["job_id"])
    else:
        assert isinstance(outcome, SlurmError) and not isinstance(outcome, SlurmUnreachable)
        assert "Requested node configuration is not available" in str(outcome)


@pytest.mark.parametrize("release,version", REAL, ids=[set_id(*s) for s in REAL])
def test_a_refused_token_is_read_again_and_the_call_retried_once(release, version):
    # 401 without a token, 511 for a bad one from 24.11 on, 500 "Unspecified error" on 22.05.
    replay = Replay(release, version, {"sequence": ["job_running"]})
    replay.refuse_token = 1
    running_id, _ = job_ids(release, version)
    renewed = []

    async def reload():
        renewed.append(1)
        return SECRET + "-new"

    async def scenario():
        b = bridge(replay, pinned=version, tokens=StaticToken(SECRET, reload))
        return await b.job(running_id)

    job = run(scenario())
    assert job.state == "RUNNING" and renewed == [1]
    assert [r.headers["X-SLURM-USER-TOKEN"] for r in replay.seen] == [SECRET, SECRET + "-new"]


@pytest.mark.parametrize("release,version", REAL, ids=[set_id(*s) for s in REAL])
def test_a_second_refusal_is_an_auth_error_in_slurms_words_without_the_token(release, version):
    replay = Replay(release, version, {"sequence": ["job_running"]})
    replay.refuse_token = 2
    running_id, _ = job_ids(release, version)

    async def scenario():
        b = bridge(replay, pinned=version)
        with pytest.raises(SlurmAuthError) as err:
            await b.job(running_id)
        return err.value

    error = run(scenario())
    assert isinstance(error, SlurmUnreachable) and SECRET not in str(error)
    assert ("Protocol authentication error" if release != "22.05" else "Unspecified error") in str(error)
    assert len(replay.seen) == 2


def test_the_constructed_v0039_through_the_bridge(standard_request):
    replay = Replay("constructed", "v0.0.39", {"sequence": ["job_submit", "job_pending"],
                                               "extra": ["job_unknown", "jobs", "jobs_not_modified", "job_delete"]})

    async def scenario():
        b = bridge(replay)
        job_id = await b.submit(standard_request)
        pending = await b.job("4242")
        unknown = await b.job("999999")
        changed = await b.jobs(since=1795440000)
        unchanged = await b.jobs(since=1795440100)
        await b.cancel("4242")
        return b, job_id, pending, unknown, changed, unchanged

    b, job_id, pending, unknown, changed, unchanged = run(scenario())
    assert b.api_version == "v0.0.39" and job_id == "4242" and pending.state == "PENDING" and unknown is None
    assert [j.state for j in changed.jobs] == ["RUNNING", "FAILED"] and unchanged.jobs is None
    submit = next(r for r in replay.seen if r.method == "POST")
    assert json.loads(submit.content) == exchange("constructed", "v0.0.39", "job_submit")["request"]["body"]
    assert folder("constructed", "v0.0.39") == CONSTRUCTED["v0.0.39"]


def test_unreachable_slurmrestd_is_unreachable_not_refused():
    def refuse(request):
        raise httpx.ConnectError("connection refused")

    async def scenario():
        b = RestBridge("http://slurmrestd.test:6820", "root", StaticToken(SECRET), api_version="v0.0.38",
                       transport=httpx.MockTransport(refuse))
        with pytest.raises(SlurmUnreachable) as err:
            await b.jobs()
        return err.value

    error = run(scenario())
    assert "connection refused" in str(error) and SECRET not in str(error)
