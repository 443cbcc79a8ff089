"""The local Slurm 22.05 cluster against its real slurmrestd (openapi/v0.0.38).

Also records the real answers as fixtures for the contract tests under
tests/contract/recordings/v0.0.38/ (written when missing, or all of them with AIFACTORY_RECORD=1).
Each recording is {"request": {...}, "status": int, "body": <JSON answer or null>}.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aifactory.devstack.process import state_dir
from aifactory.devstack.slurm import API_VERSION, LocalSlurm

pytestmark = pytest.mark.e2e

RECORDINGS = Path(__file__).resolve().parents[1] / "contract" / "recordings" / API_VERSION
BASE = f"/slurm/{API_VERSION}"
SLURM_DAEMONS = ("slurmctld", "slurmd", "slurmrestd")


@pytest.fixture(scope="module")
def slurm() -> Iterator[LocalSlurm]:
    cluster = LocalSlurm()
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster runs its daemons as root")
    try:
        cluster.check_installed()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    before = cluster.status()
    was_running = any(before[name].startswith("running") for name in SLURM_DAEMONS)
    cluster.up(progress=print)
    yield cluster
    # Leave a cluster that was (even partly) running before; stop only what this test started.
    if not was_running:
        print("\n".join(cluster.down()))


@pytest.fixture(scope="module")
def token(slurm: LocalSlurm) -> str:
    return slurm.mint_token(lifespan=3600)


@pytest.fixture(scope="module")
def client(slurm: LocalSlurm, token: str) -> Iterator[httpx.Client]:
    headers = {"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": token}
    with httpx.Client(base_url=slurm.url, headers=headers, timeout=20) as c:
        yield c


RECORDED_STATE_DIR = "/var/lib/aifactory-dev"  # stands for the local stack's state directory in recordings


@pytest.fixture(scope="module")
def record(token: str) -> Callable[..., None]:
    force = os.environ.get("AIFACTORY_RECORD") == "1"

    def save(name: str, response: httpx.Response, body: Any = None, trim_jobs_to: set[int] | None = None) -> None:
        path = RECORDINGS / f"{name}.json"
        if path.exists() and not force:
            return
        answer: Any = response.json() if response.content else None
        if trim_jobs_to is not None and isinstance(answer, dict):
            # Other jobs on the cluster are noise; the job objects themselves are kept whole.
            answer["jobs"] = [j for j in answer.get("jobs", []) if j.get("job_id") in trim_jobs_to]
        request: dict[str, Any] = {"method": response.request.method, "path": response.request.url.raw_path.decode()}
        if body is not None:
            request["body"] = body
        text = json.dumps({"request": request, "status": response.status_code, "body": answer}, indent=2,
                          sort_keys=False)
        # The token only travels in headers, but make sure it never lands in a fixture; nor does this machine's
        # state directory.
        text = text.replace(token, "<redacted>").replace(str(state_dir()), RECORDED_STATE_DIR)
        RECORDINGS.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")

    return save


def submit_body(slurm: LocalSlurm, name: str, script: str, **job: Any) -> dict[str, Any]:
    # No SLURM_CONF here on purpose: slurmd gives the job its own config path (checked below).
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}
    return {
        "job": {"name": name, "environment": env, "current_working_directory": str(slurm.jobs_dir),
                "time_limit": 10, **job},
        "script": script,
    }


def get_job(client: httpx.Client, job_id: int) -> tuple[httpx.Response, dict[str, Any]]:
    r = client.get(f"{BASE}/job/{job_id}")
    assert r.status_code == 200, r.text
    jobs = r.json()["jobs"]
    assert len(jobs) == 1 and jobs[0]["job_id"] == job_id
    return r, jobs[0]


def wait_job(client: httpx.Client, job_id: int, ok: Callable[[dict[str, Any]], bool],
             timeout: float = 60) -> tuple[httpx.Response, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        r, job = get_job(client, job_id)
        if ok(job):
            return r, job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never reached the expected state; last: "
                                 f"{job['job_state']} comment={job['comment']!r} reason={job['state_reason']}")
        time.sleep(0.5)


def test_ping(client: httpx.Client, record: Callable[..., None]) -> None:
    r = client.get(f"{BASE}/ping")
    assert r.status_code == 200, r.text
    assert r.json()["pings"][0]["ping"] == "UP"
    record("ping", r)


def test_node(slurm: LocalSlurm, client: httpx.Client, record: Callable[..., None]) -> None:
    r = client.get(f"{BASE}/node/{slurm.node_name}")
    assert r.status_code == 200, r.text
    node = r.json()["nodes"][0]
    assert node["name"] == slurm.node_name
    assert slurm.partition in node["partitions"]
    assert node["state"] in ("idle", "mixed", "allocated")
    record("node", r)


def test_job_runs_publishes_comment_and_is_cancelled(slurm: LocalSlurm, client: httpx.Client,
                                                    record: Callable[..., None]) -> None:
    # update_time is compared with slurmctld's last change, to the second; a change in that second counts.
    before_submit = int(time.time()) - 1
    script = ("#!/bin/bash\n"
              "scontrol update JobId=$SLURM_JOB_ID Comment=hello-$SLURM_JOB_ID\n"
              "sleep 300\n")
    body = submit_body(slurm, "e2e-comment", script)
    r = client.post(f"{BASE}/job/submit", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["errors"] == []
    job_id = answer["job_id"]
    assert isinstance(job_id, int) and answer["step_id"] == "BATCH"
    record("job_submit", r, body=body)
    try:
        # The comment arrives only if scontrol in the job found the config without SLURM_CONF from us.
        r, job = wait_job(client, job_id, lambda j: j["job_state"] == "RUNNING" and j["comment"] == f"hello-{job_id}")
        assert job["batch_host"] == slurm.node_name
        assert job["nodes"] == slurm.node_name
        assert job["partition"] == slurm.partition
        assert job["current_working_directory"] == str(slurm.jobs_dir)
        record("job_running", r, trim_jobs_to={job_id})

        r = client.get(f"{BASE}/jobs", params={"update_time": before_submit})
        assert r.status_code == 200, r.text
        assert "last_update" not in r.json()  # 22.05 gives none: the poller uses its own clock
        assert job_id in {j["job_id"] for j in r.json()["jobs"]}
        record("jobs", r, trim_jobs_to={job_id})

        # Nothing changes while the job sleeps: 304 with an empty body (retry in case another client acts).
        for _ in range(5):
            time.sleep(1.1)
            since = int(time.time())
            time.sleep(1.1)
            r = client.get(f"{BASE}/jobs", params={"update_time": since})
            if r.status_code == 304:
                break
        assert r.status_code == 304, r.status_code
        assert r.content == b""
        record("jobs_not_modified", r)

        r = client.delete(f"{BASE}/job/{job_id}")
        assert r.status_code == 200, r.text
        record("job_delete", r)
        r, job = wait_job(client, job_id, lambda j: j["job_state"] == "CANCELLED")
        assert job["comment"] == f"hello-{job_id}"
        record("job_cancelled", r, trim_jobs_to={job_id})
    finally:
        client.delete(f"{BASE}/job/{job_id}")


def test_failed_job_exit_code(slurm: LocalSlurm, client: httpx.Client, record: Callable[..., None]) -> None:
    body = submit_body(slurm, "e2e-exit3", "#!/bin/bash\nexit 3\n")
    r = client.post(f"{BASE}/job/submit", json=body)
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    r, job = wait_job(client, job_id, lambda j: j["job_state"] not in ("PENDING", "CONFIGURING", "RUNNING",
                                                                        "COMPLETING"))
    assert job["job_state"] == "FAILED"
    assert job["state_reason"] == "NonZeroExitCode"
    # v0.0.38: the raw wait status, return code in the high byte (3 << 8 == 768).
    assert job["exit_code"] == 3 << 8
    assert job["exit_code"] >> 8 == 3 and job["exit_code"] & 0x7F == 0
    record("job_failed", r, trim_jobs_to={job_id})


def test_job_gets_slurm_conf_from_slurmd(slurm: LocalSlurm, client: httpx.Client) -> None:
    # 22.05: slurmstepd sets SLURM_CONF to slurmd's config path, overwriting what the submitter sent.
    script = "#!/bin/bash\nscontrol update JobId=$SLURM_JOB_ID Comment=conf=$SLURM_CONF\n"
    body = submit_body(slurm, "e2e-slurm-conf", script)
    body["job"]["environment"]["SLURM_CONF"] = "/nonexistent/slurm.conf"
    r = client.post(f"{BASE}/job/submit", json=body)
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    _, job = wait_job(client, job_id, lambda j: j["job_state"] not in ("PENDING", "CONFIGURING", "RUNNING",
                                                                        "COMPLETING"))
    assert job["job_state"] == "COMPLETED"
    assert job["comment"] == f"conf={slurm.conf_path}"


def test_unknown_job(client: httpx.Client, record: Callable[..., None]) -> None:
    r = client.get(f"{BASE}/job/999999")
    # 22.05 answers most errors with 500 and the reason in errors[].
    assert r.status_code == 500
    assert r.json()["errors"][0]["error"] == "Invalid job id specified"
    assert r.json()["jobs"] == []
    record("job_unknown", r)


def test_submit_to_bad_partition_is_rejected(slurm: LocalSlurm, client: httpx.Client,
                                             record: Callable[..., None]) -> None:
    body = submit_body(slurm, "e2e-bad-partition", "#!/bin/bash\ntrue\n", partition="no-such-partition")
    r = client.post(f"{BASE}/job/submit", json=body)
    assert r.status_code == 500, r.text
    answer = r.json()
    assert answer["errors"][0]["error"] == "Invalid partition name specified"
    assert answer["errors"][0]["error_code"] == 2000
    assert "job_id" not in answer
    record("job_submit_bad_partition", r, body=body)


def test_submit_without_environment_is_rejected(slurm: LocalSlurm, client: httpx.Client,
                                                record: Callable[..., None]) -> None:
    body = submit_body(slurm, "e2e-no-env", "#!/bin/bash\ntrue\n")
    body["job"]["environment"] = {}
    r = client.post(f"{BASE}/job/submit", json=body)
    assert r.status_code == 400, r.text
    assert "environment must be set" in [e.get("error") for e in r.json()["errors"]]
    record("job_submit_no_environment", r, body=body)


def test_status_reports_running(slurm: LocalSlurm) -> None:
    status = slurm.status()
    for name in SLURM_DAEMONS:
        assert status[name].startswith("running"), status
    assert status["munged"].startswith("running"), status


def test_nodes_idle_busy_and_drained(slurm: LocalSlurm, client: httpx.Client, record: Callable[..., None]) -> None:
    """GET /nodes (all nodes in one answer) as the node idles, runs a job and is drained; the dialect reads each."""
    from aifactory.slurm.dialects import dialect_for

    dialect = dialect_for(API_VERSION)
    r = client.get(f"{BASE}/nodes")
    assert r.status_code == 200, r.text
    node = next(n for n in dialect.nodes(r.json()) if n.name == slurm.node_name)
    assert node.cpus == os.cpu_count() and node.memory_mb > 0 and node.available
    assert node.gpus == ()  # the local node has no GPU, and says so
    record("nodes", r)
    body = submit_body(slurm, "e2e-nodes", "#!/bin/bash\nsleep 300\n", cpus_per_task=1)
    job_id = client.post(f"{BASE}/job/submit", json=body).json()["job_id"]
    try:
        wait_job(client, job_id, lambda j: j["job_state"] == "RUNNING")
        r = client.get(f"{BASE}/nodes")
        node = next(n for n in dialect.nodes(r.json()) if n.name == slurm.node_name)
        assert node.cpus_allocated >= 1 and node.state in ("MIXED", "ALLOCATED")
        record("nodes_busy", r)
        slurm._run(["scontrol", "update", f"nodename={slurm.node_name}", "state=drain", "reason=e2e maintenance"])
        r = client.get(f"{BASE}/nodes")
        node = next(n for n in dialect.nodes(r.json()) if n.name == slurm.node_name)
        assert not node.available and "DRAIN" in node.flags and node.reason == "e2e maintenance"
        record("nodes_drained", r)
    finally:
        slurm._run(["scontrol", "update", f"nodename={slurm.node_name}", "state=resume"], check=False)
        client.delete(f"{BASE}/job/{job_id}")
    # The SSH CLI transport's command prints the same answer (22.05: sinfo's, openapi/v0.0.38).
    from aifactory.slurm.cli import CliBridge, dialect_of_answer

    printed = json.loads(slurm._run(["sh", "-c", CliBridge.NODES_LINE]).stdout)
    assert [n.name for n in dialect_of_answer(printed).nodes(printed)] == [slurm.node_name]
