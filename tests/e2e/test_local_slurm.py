"""The local Slurm clusters against their real slurmrestd: 22.05 (openapi/v0.0.38), 24.11 (v0.0.40 to v0.0.42)
and 26.05 (v0.0.42 to v0.0.45), each API version a release serves.

The request bodies are aifactory's own (the dialect builds them); the answers are recorded as fixtures for the
contract tests under tests/contract/recordings/slurm-<release>/<version>/ (written when missing, or all of them
with AIFACTORY_RECORD=1). Each recording is {"request": {...}, "status": int, "body": <JSON answer or null>};
the token and this machine's state directory never land in one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from aifactory.devstack.process import state_dir
from aifactory.devstack.slurm import RELEASES
from aifactory.slurm.dialects import dialect_for
from aifactory.slurm.jobs import JobRequest

RECORDINGS = Path(__file__).resolve().parents[1] / "contract" / "recordings"
RECORDED_STATE_DIR = "/var/lib/aifactory-dev"  # stands for the local stack's state directory in recordings
CASES = [pytest.param(release, version, id=f"slurm-{release}-{version}")
         for release, facts in RELEASES.items() for version in facts.api_versions if version >= "v0.0.38"]
pytestmark = [pytest.mark.e2e, pytest.mark.slurm_cases(["version"], CASES)]
UNFINISHED = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING")


class Api:
    """slurmrestd of one release, in one API version, with a token of root."""

    def __init__(self, slurm_release, version: str):
        self.s = slurm_release
        self.version = version
        self.base = f"/slurm/{version}"
        self.client = httpx.Client(base_url=slurm_release.slurm.url, timeout=20,
                                   headers={"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": slurm_release.token})

    def submit_body(self, name: str, script: str, **over: Any) -> dict[str, Any]:
        """What aifactory sends for a job: the dialect's own body. No SLURM_CONF: slurmd gives the job its own."""
        request = JobRequest(name=name, script=script,
                             environment={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
                                          "LANG": "C.UTF-8"},
                             working_directory=str(self.s.slurm.jobs_dir), standard_output="", standard_error="",
                             time_limit_minutes=10, **over)
        return dialect_for(self.version).submit_body(request)

    def get_job(self, job_id: int) -> tuple[httpx.Response, dict[str, Any]]:
        r = self.client.get(f"{self.base}/job/{job_id}")
        assert r.status_code == 200, r.text
        jobs = r.json()["jobs"]
        assert len(jobs) == 1 and jobs[0]["job_id"] == job_id
        return r, jobs[0]

    def wait_job(self, job_id: int, ok: Callable[[dict[str, Any]], bool],
                 timeout: float = 60) -> tuple[httpx.Response, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            r, job = self.get_job(job_id)
            if ok(job):
                return r, job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} never reached the expected state; last: "
                                     f"{job['job_state']} comment={job['comment']!r} reason={job['state_reason']}")
            time.sleep(0.5)

    def update_time(self, since: int) -> str:
        return dialect_for(self.version).update_time(since, int(time.time()))


def state(job: dict[str, Any]) -> str:
    """The base state: a string up to v0.0.39, a list (base state first) from v0.0.40."""
    value = job["job_state"]
    return value[0] if isinstance(value, list) else value


@pytest.fixture
def api(slurm_release, version) -> Api:
    a = Api(slurm_release, version)
    yield a
    a.client.close()


@pytest.fixture
def record(slurm_release, api: Api) -> Callable[..., None]:
    force = os.environ.get("AIFACTORY_RECORD") == "1"
    folder = RECORDINGS / f"slurm-{slurm_release.release}" / api.version

    def save(name: str, response: httpx.Response, body: Any = None, trim_jobs_to: set[int] | None = None) -> None:
        path = folder / f"{name}.json"
        if path.exists() and not force:
            return
        answer: Any = response.json() if response.content else None
        if trim_jobs_to is not None and isinstance(answer, dict):
            # Other jobs on the cluster are noise; the job objects themselves are kept whole.
            answer["jobs"] = [j for j in answer.get("jobs", []) if j.get("job_id") in trim_jobs_to]
        if name == "openapi" and isinstance(answer, dict):
            answer = {"paths": {p: {} for p in answer.get("paths", {})}}  # what version detection reads
        request: dict[str, Any] = {"method": response.request.method, "path": response.request.url.raw_path.decode()}
        if body is not None:
            request["body"] = body
        text = json.dumps({"request": request, "status": response.status_code, "body": answer}, indent=2)
        # The token only travels in headers, but make sure it never lands in a fixture; nor does this machine's
        # state directory.
        text = text.replace(slurm_release.token, "<redacted>").replace(str(state_dir()), RECORDED_STATE_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")

    return save


def test_openapi_lists_the_version(api: Api, record) -> None:
    r = api.client.get("/openapi/v3")
    assert r.status_code == 200
    assert any(p.startswith(f"{api.base}/") for p in r.json()["paths"])
    record("openapi", r)


def test_ping(api: Api, record) -> None:
    r = api.client.get(f"{api.base}/ping")
    assert r.status_code == 200, r.text
    ping = r.json()["pings"][0]
    # "ping": "UP" (v0.0.38), "pinged": "UP" (v0.0.40 to v0.0.44), only "responding" (v0.0.45).
    assert ping.get("ping") == "UP" or ping.get("pinged") == "UP" or ping.get("responding") is True
    record("ping", r)


def test_node(slurm_release, api: Api, record) -> None:
    slurm = slurm_release.slurm
    r = api.client.get(f"{api.base}/node/{slurm.node_name}")
    assert r.status_code == 200, r.text
    node = r.json()["nodes"][0]
    assert node["name"] == slurm.node_name and node["address"] == "127.0.0.1"
    assert slurm.partition in node["partitions"]
    states = node["state"] if isinstance(node["state"], list) else [node["state"]]
    assert states[0].lower() in ("idle", "mixed", "allocated")
    record("node", r)


def test_job_runs_publishes_comment_and_is_cancelled(slurm_release, api: Api, record) -> None:
    slurm = slurm_release.slurm
    # update_time is compared with slurmctld's last change, to the second; a change in that second counts.
    before_submit = int(time.time()) - 1
    script = ("#!/bin/bash\n"
              "scontrol update JobId=$SLURM_JOB_ID Comment=hello-$SLURM_JOB_ID\n"
              "sleep 300\n")
    body = api.submit_body("e2e-comment", script)
    r = api.client.post(f"{api.base}/job/submit", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["errors"] == []
    job_id = answer["job_id"]
    assert isinstance(job_id, int) and answer["step_id"].lower() == "batch"
    # v0.0.40 and v0.0.41 also answer inside `result`; v0.0.42 on do not.
    assert ("result" in answer) == (api.version in ("v0.0.40", "v0.0.41"))
    record("job_submit", r, body=body)
    try:
        # The comment arrives only if scontrol in the job found the config without SLURM_CONF from us.
        r, job = api.wait_job(job_id, lambda j: state(j) == "RUNNING" and j["comment"] == f"hello-{job_id}")
        assert job["batch_host"] == slurm.node_name and job["nodes"] == slurm.node_name
        assert job["partition"] == slurm.partition
        assert job["current_working_directory"] == str(slurm.jobs_dir)
        record("job_running", r, trim_jobs_to={job_id})

        r = api.client.get(f"{api.base}/jobs", params={"update_time": api.update_time(before_submit)})
        assert r.status_code == 200, r.text
        assert ("last_update" in r.json()) == (api.version != "v0.0.38")  # 22.05 gives none
        assert job_id in {j["job_id"] for j in r.json()["jobs"]}
        record("jobs", r, trim_jobs_to={job_id})
        if api.version in ("v0.0.40", "v0.0.41"):
            # The integer form is refused here (422, "Parsing of N for timestamp failed").
            refused = api.client.get(f"{api.base}/jobs", params={"update_time": before_submit})
            assert refused.status_code == 422 and "for timestamp failed" in refused.text
            record("jobs_update_time_integer", refused)

        # Nothing changes while the job sleeps: 304 with an empty body on 22.05, 200 with no jobs from 24.11 on
        # (retry in case another client acts in that second).
        for _ in range(5):
            time.sleep(1.1)
            since = int(time.time())
            time.sleep(1.1)
            r = api.client.get(f"{api.base}/jobs", params={"update_time": api.update_time(since)})
            if r.status_code == 304 or (r.status_code == 200 and not r.json()["jobs"]):
                break
        if api.version == "v0.0.38":
            assert r.status_code == 304 and r.content == b""
        else:
            assert r.status_code == 200 and r.json()["jobs"] == []
        record("jobs_not_modified", r)

        r = api.client.delete(f"{api.base}/job/{job_id}")
        assert r.status_code == 200, r.text
        record("job_delete", r)
        r, job = api.wait_job(job_id, lambda j: state(j) == "CANCELLED")
        assert job["comment"] == f"hello-{job_id}"
        record("job_cancelled", r, trim_jobs_to={job_id})
    finally:
        api.client.delete(f"{api.base}/job/{job_id}")


def test_failed_job_exit_code(api: Api, record) -> None:
    r = api.client.post(f"{api.base}/job/submit", json=api.submit_body("e2e-exit3", "#!/bin/bash\nexit 3\n"))
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    r, job = api.wait_job(job_id, lambda j: state(j) not in UNFINISHED)
    assert state(job) == "FAILED" and job["state_reason"] == "NonZeroExitCode"
    if api.version == "v0.0.38":
        assert job["exit_code"] == 3 << 8  # the raw wait status: return code in the high byte
    else:
        assert job["exit_code"]["return_code"]["number"] == 3 and job["exit_code"]["status"] == ["ERROR"]
    record("job_failed", r, trim_jobs_to={job_id})


def test_job_gets_slurm_conf_from_slurmd(slurm_release, api: Api) -> None:
    # slurmstepd sets SLURM_CONF to slurmd's config path, overwriting what the submitter sent.
    script = "#!/bin/bash\nscontrol update JobId=$SLURM_JOB_ID Comment=conf=$SLURM_CONF\n"
    body = api.submit_body("e2e-slurm-conf", script)
    environment = body["job"]["environment"]
    if isinstance(environment, dict):
        environment["SLURM_CONF"] = "/nonexistent/slurm.conf"
    else:
        environment.append("SLURM_CONF=/nonexistent/slurm.conf")
    r = api.client.post(f"{api.base}/job/submit", json=body)
    assert r.status_code == 200, r.text
    _, job = api.wait_job(r.json()["job_id"], lambda j: state(j) not in UNFINISHED)
    assert state(job) == "COMPLETED"
    assert job["comment"] == f"conf={slurm_release.slurm.conf_path}"


def test_unknown_job(api: Api, record) -> None:
    r = api.client.get(f"{api.base}/job/999999")
    # 22.05 answers most errors with 500 and the reason in errors[]; 24.11 on: 404 (error 2017).
    assert r.status_code == (500 if api.version == "v0.0.38" else 404)
    assert r.json()["errors"][0]["error"] == "Invalid job id specified"
    assert r.json()["jobs"] == []
    record("job_unknown", r)


def test_a_bad_token_is_refused(api: Api, record) -> None:
    r = api.client.get(f"{api.base}/jobs", headers={"X-SLURM-USER-TOKEN": "eyJhbGciOiJIUzI1NiJ9.bad.token"})
    # 22.05: 500 "Unspecified error" (slurmctld's jwt_decode failed); 24.11 on: 511, error 1007.
    if api.version == "v0.0.38":
        assert r.status_code == 500 and r.json()["errors"][0]["error"] == "Unspecified error"
    else:
        assert r.status_code == 511
        assert [e["error_number"] for e in r.json()["errors"]] == [1007]
    record("jobs_bad_token", r)


def test_submit_to_bad_partition_is_rejected(slurm_release, api: Api, record) -> None:
    body = api.submit_body("e2e-bad-partition", "#!/bin/bash\ntrue\n", partition="no-such-partition")
    r = api.client.post(f"{api.base}/job/submit", json=body)
    # 22.05 and 24.11: 500; 26.05: 422 (error 2000 both).
    assert r.status_code == (422 if slurm_release.release == "26.05" else 500), r.text
    answer = r.json()
    assert any(e["error"] == "Invalid partition name specified" for e in answer["errors"])
    assert "job_id" not in answer or not answer["job_id"]
    record("job_submit_bad_partition", r, body=body)


def test_a_job_no_node_can_run_now(slurm_release, api: Api, record) -> None:
    # More CPUs than the node has: 22.05 takes the job and says so in `errors` (200, error 2015), 26.05 takes it
    # with warnings, 24.11 refuses it (500, error 2014). A job Slurm took is a job, whatever else it says.
    body = api.submit_body("e2e-too-big", "#!/bin/bash\ntrue\n", cpus_per_task=64)
    r = api.client.post(f"{api.base}/job/submit", json=body)
    answer = r.json()
    record("job_submit_too_big", r, body=body)
    job_id = answer.get("job_id")
    if slurm_release.release == "24.11":
        assert r.status_code == 500 and not job_id
        assert [e["error_number"] for e in answer["errors"]] == [2014]
        return
    assert r.status_code == 200 and job_id
    try:
        _, job = api.get_job(job_id)
        assert state(job) == "PENDING" and job["state_reason"] == "PartitionConfig"
    finally:
        api.client.delete(f"{api.base}/job/{job_id}")


def test_submit_without_environment_is_rejected(api: Api, record) -> None:
    body = api.submit_body("e2e-no-env", "#!/bin/bash\ntrue\n")
    del body["job"]["environment"]
    r = api.client.post(f"{api.base}/job/submit", json=body)
    # 22.05: 400 "environment must be set"; 24.11: 500, error 2019; 26.05: 422, error 2127.
    assert r.status_code in (400, 422, 500), r.text
    assert r.json()["errors"]
    record("job_submit_no_environment", r, body=body)


def test_status_reports_running(slurm_release) -> None:
    status = slurm_release.slurm.status()
    assert all(value.startswith("running") for value in status.values()), status


def test_nodes_idle_busy_and_drained(slurm_release, api: Api, record) -> None:
    """GET /nodes (all nodes in one answer) as the node idles, runs a job and is drained; the dialect reads each.

    24.11 and 26.05 flag a node NOT_RESPONDING for a moment around a job's launch (until it answers slurmctld's
    ping): each read is retried until the node shows what is expected, for a few seconds."""
    slurm = slurm_release.slurm
    dialect = dialect_for(api.version)

    def read_until(ok, what: str):
        deadline = time.monotonic() + 15
        while True:
            r = api.client.get(f"{api.base}/nodes")
            assert r.status_code == 200, r.text
            node = next(n for n in dialect.nodes(r.json()) if n.name == slurm.node_name)
            if ok(node):
                return r, node
            assert time.monotonic() < deadline, f"node never {what}: {node}"
            time.sleep(0.5)

    r, node = read_until(lambda n: n.available and n.state == "IDLE", "idle")
    assert node.cpus == os.cpu_count() and node.memory_mb > 0
    assert node.gpus == ()  # the local node has no GPU, and says so
    record("nodes", r)
    body = api.submit_body("e2e-nodes", "#!/bin/bash\nsleep 300\n", cpus_per_task=1)
    job_id = api.client.post(f"{api.base}/job/submit", json=body).json()["job_id"]
    try:
        api.wait_job(job_id, lambda j: state(j) == "RUNNING")
        r, node = read_until(lambda n: n.cpus_allocated >= 1 and n.available, "busy")
        assert node.state in ("MIXED", "ALLOCATED")
        record("nodes_busy", r)
        slurm_release.run("scontrol", "update", f"nodename={slurm.node_name}", "state=drain", "reason=e2e maintenance")
        r, node = read_until(lambda n: "DRAIN" in n.flags and "NOT_RESPONDING" not in n.flags, "drained")
        assert not node.available and node.reason == "e2e maintenance"
        record("nodes_drained", r)
    finally:
        slurm_release.run("scontrol", "update", f"nodename={slurm.node_name}", "state=resume", check=False)
        api.client.delete(f"{api.base}/job/{job_id}")
    # The SSH CLI transport's command prints the same answer (22.05: sinfo's, openapi/v0.0.38; later scontrol's).
    from aifactory.slurm.cli import CliBridge, dialect_of_answer

    printed = json.loads(slurm_release.run("sh", "-c", CliBridge.NODES_LINE).stdout)
    assert [n.name for n in dialect_of_answer(printed).nodes(printed)] == [slurm.node_name]
