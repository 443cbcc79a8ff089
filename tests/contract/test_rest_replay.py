"""RestBridge replaying slurmrestd exchanges through an httpx MockTransport: the real 22.05 recordings, and the
constructed answers of the newer versions. Checks what goes on the wire and what the bridge makes of the answers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from aifactory.slurm.errors import SlurmAuthError, SlurmError, SlurmUnreachable
from aifactory.slurm.jobs import JobRequest
from aifactory.slurm.rest import RestBridge
from aifactory.slurm.tokens import StaticToken

RECORDINGS = Path(__file__).parent / "recordings"
SECRET = "eyJhbGciOiJIUzI1NiJ9.secret-token-value"


class Replay:
    """Answers each request with the recorded exchange for its method and path (query included)."""

    # Exchanges that share a method and path with another one; tests add them when they want them.
    ALTERNATIVES = {"job_cancelled", "job_submit_bad_partition", "job_submit_no_environment"}

    def __init__(self, version: str):
        self.exchanges: dict[tuple[str, str], dict] = {}
        for path in sorted((RECORDINGS / version).glob("*.json")):
            if path.stem in self.ALTERNATIVES:
                continue
            exchange = json.loads(path.read_text())
            request = exchange["request"]
            self.exchanges.setdefault((request["method"], request["path"]), exchange)
        self.seen: list[httpx.Request] = []
        self.answer_401 = 0

    def add(self, name: str, version: str) -> None:
        exchange = json.loads((RECORDINGS / version / f"{name}.json").read_text())
        self.exchanges[(exchange["request"]["method"], exchange["request"]["path"])] = exchange

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if self.answer_401:
            self.answer_401 -= 1
            return httpx.Response(401, text="Authentication failure")
        key = (request.method, request.url.raw_path.decode())
        exchange = self.exchanges.get(key)
        if exchange is None:
            return httpx.Response(599, text=f"no recording for {key}")
        body = exchange["body"]
        return httpx.Response(exchange["status"], content=b"" if body is None else json.dumps(body).encode(),
                              headers={"content-type": "application/json"})


def bridge(replay: Replay, pinned: str | None = None, tokens=None) -> RestBridge:
    return RestBridge("http://slurmrestd.test:6820", "root", tokens or StaticToken(SECRET), api_version=pinned,
                      transport=httpx.MockTransport(replay))


def run(coro):
    return asyncio.run(coro)


# ---- the real 22.05 recordings ----------------------------------------------------------------

def test_v0038_detect_submit_follow_cancel():
    replay = Replay("v0.0.38")

    async def scenario():
        b = bridge(replay)
        recorded = json.loads((RECORDINGS / "v0.0.38" / "job_submit.json").read_text())["request"]["body"]
        request = JobRequest(name="e2e-comment", script=recorded["script"], environment=recorded["job"]["environment"],
                             working_directory=recorded["job"]["current_working_directory"],
                             standard_output="", standard_error="", time_limit_minutes=10)
        job_id = await b.submit(request)
        running = await b.job("18")
        unknown = await b.job("999999")
        changed = await b.jobs(since=1795439081)
        unchanged = await b.jobs(since=1795439085)
        await b.cancel("18")
        address = await b.node_address("vm")
        await b.close()
        return b, job_id, running, unknown, changed, unchanged, address

    b, job_id, running, unknown, changed, unchanged, address = run(scenario())
    assert b.api_version == "v0.0.38"  # detected from the recorded /openapi/v3
    assert job_id == "18"
    assert running.state == "RUNNING" and running.batch_host == "vm" and running.comment == "hello-18"
    assert unknown is None  # 22.05: 500 "Invalid job id specified"
    assert changed.jobs and changed.jobs[0].job_id == "18" and changed.last_update is None
    assert unchanged.jobs is None  # 304
    assert address == "127.0.0.1"

    methods = [(r.method, r.url.raw_path.decode()) for r in replay.seen]
    assert methods[0] == ("GET", "/openapi/v3")
    assert ("DELETE", "/slurm/v0.0.38/job/18") in methods
    for request in replay.seen:  # 22.05 needs both headers on every call
        assert request.headers["X-SLURM-USER-NAME"] == "root"
        assert request.headers["X-SLURM-USER-TOKEN"] == SECRET
    sent = json.loads(replay.seen[1].content)
    assert sent["script"] == json.loads((RECORDINGS / "v0.0.38" / "job_submit.json").read_text())[
        "request"]["body"]["script"]
    assert sent["job"]["environment"] == {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
                                          "LANG": "C.UTF-8"}
    assert b.requests_sent == len(replay.seen)


def test_v0038_rejected_submits_carry_slurms_words():
    replay = Replay("v0.0.38")
    replay.add("job_submit_bad_partition", "v0.0.38")

    async def scenario():
        b = bridge(replay, pinned="v0.0.38")
        with pytest.raises(SlurmError) as bad:
            await b.submit(JobRequest(name="x", script="#!/bin/bash\ntrue\n", environment={"A": "1"},
                                      working_directory="/tmp", standard_output="", standard_error="",
                                      partition="no-such-partition"))
        return bad.value

    error = run(scenario())
    assert "Invalid partition name specified" in str(error) and not isinstance(error, SlurmUnreachable)
    assert SECRET not in str(error)


def test_a_401_renews_the_token_and_retries_once():
    replay = Replay("v0.0.38")
    replay.answer_401 = 1
    renewed = []

    async def reload():
        renewed.append(1)
        return SECRET + "-new"

    async def scenario():
        b = bridge(replay, pinned="v0.0.38", tokens=StaticToken(SECRET, reload))
        return await b.job("18")

    job = run(scenario())
    assert job.state == "RUNNING" and renewed == [1]
    assert [r.headers["X-SLURM-USER-TOKEN"] for r in replay.seen] == [SECRET, SECRET + "-new"]


def test_a_second_401_is_an_auth_error_without_the_token():
    replay = Replay("v0.0.38")
    replay.answer_401 = 2

    async def scenario():
        b = bridge(replay, pinned="v0.0.38")
        with pytest.raises(SlurmAuthError) as err:
            await b.job("18")
        return err.value

    error = run(scenario())
    assert isinstance(error, SlurmUnreachable) and "401" in str(error) and SECRET not in str(error)
    assert len(replay.seen) == 2


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


# ---- the constructed answers of v0.0.39+ -------------------------------------------------------

@pytest.mark.parametrize("version", ["v0.0.39", "v0.0.40", "v0.0.41", "v0.0.42", "v0.0.43", "v0.0.44"])
def test_newer_versions_through_the_bridge(version, standard_request):
    replay = Replay(version)

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
    assert b.api_version == version
    assert job_id == "4242" and pending.state == "PENDING" and unknown is None
    assert [j.state for j in changed.jobs] == ["RUNNING", "FAILED"] and changed.last_update == 1795440100
    assert unchanged.jobs is None and unchanged.last_update == 1795440100
    submit = next(r for r in replay.seen if r.method == "POST")
    assert submit.url.raw_path.decode() == f"/slurm/{version}/job/submit"
    assert json.loads(submit.content) == json.loads(
        (RECORDINGS / version / "job_submit.json").read_text())["request"]["body"]
