"""Why a service failed, on the real stack: Slurm's end state and the job's last log lines become one reason of
the failure taxonomy; each job is an attempt whose output stays readable; OnFailure restarts up to its maximum.

The local Slurm enforces memory without cgroups: JobAcctGatherType=jobacct_gather/linux with
JobAcctGatherParams=OverMemoryKill (slurmstepd reads /proc every 2 s and kills a step over its request).
The failing services are created together (module fixture), so their waits overlap.
"""

from __future__ import annotations

import uuid

import pytest

# Each prints who it is (the Slurm job id) before it fails, so that each attempt's output can be told apart.
EXIT3 = ["bash", "-c", "echo \"attempt in job $SLURM_JOB_ID\"; echo 'about to exit 3' >&2; exit 3"]
HOG = ["python3", "-c", "import time\nprint('allocating 600 MB', flush=True)\n"
       "hog = [bytearray(20 * 1024 * 1024) for _ in range(30)]\nprint('allocated', flush=True)\ntime.sleep(300)\n"]
SLEEPER = ["bash", "-c", "echo \"serving forever in job $SLURM_JOB_ID\"; exec sleep 100000"]


@pytest.fixture(scope="module")
def failing(stack):
    """Services that fail in each way, created at once; deleted (and their jobs cancelled) at the end."""
    suffix = uuid.uuid4().hex[:6]
    recipes = {
        "exit3": dict(command=EXIT3, resources={"cpu": 1, "memory": "64M", "timeLimit": 5}),
        "hog": dict(command=HOG, resources={"cpu": 1, "memory": "100M", "timeLimit": 5}),
        "sleeper": dict(command=SLEEPER, resources={"cpu": 1, "memory": "64M", "timeLimit": 1}),
    }
    made_recipes = []
    for name, spec in recipes.items():
        manifest = stack.recipe_manifest(f"fail-{name}", category="e2e-failures", runtime="native",
                                         startupGraceSeconds=600, longRunning=False, **spec)
        stack.apply(manifest)
        made_recipes.append(manifest["metadata"]["name"])
        assert stack.recipe_status(f"fail-{name}")["accepted"]
    services = {
        "exit3": stack.manifest(f"exit3-{suffix}", "e2e-failures/fail-exit3"),
        "oom": stack.manifest(f"oom-{suffix}", "e2e-failures/fail-hog"),
        "timeout": stack.manifest(f"timeout-{suffix}", "e2e-failures/fail-sleeper"),
        "restarts": stack.manifest(f"restarts-{suffix}", "e2e-failures/fail-exit3",
                                   restart={"policy": "OnFailure", "maxRestarts": 2, "backoffSeconds": 1}),
    }
    for manifest in services.values():
        stack.apply(manifest)
    yield {key: m["metadata"]["name"] for key, m in services.items()}
    for manifest in services.values():
        stack.kubectl("delete", "ais", manifest["metadata"]["name"], "--wait=false", "--ignore-not-found", check=False)
    for manifest in services.values():
        stack.wait_gone(manifest["metadata"]["name"], 60)
    for name in made_recipes:
        stack.kubectl("delete", "servicerecipe", name, "--ignore-not-found", check=False)


def finished(stack, name: str, timeout: float) -> dict:
    return stack.wait_for(name, lambda o: o.get("status", {}).get("phase") in ("failed", "completed", "cancelled"),
                          timeout, what="the end")["status"]


def test_a_job_exiting_3_reads_exit_code_3_with_its_last_log_lines(stack, failing):
    status = finished(stack, failing["exit3"], 90)
    failure = status["lastFailure"]
    assert status["phase"] == "failed" and (failure["reason"], failure["exitCode"]) == ("ExitCode", 3)
    assert failure["jobId"] == status["jobId"] and "exit code 3" in failure["message"]
    assert "about to exit 3" in failure["logTail"] and f"attempt in job {status['jobId']}" in failure["logTail"]
    (attempt,) = status["attempts"]
    assert (attempt["number"], attempt["jobId"], attempt["endState"], attempt["exitCode"], attempt["reason"]) == (
        1, status["jobId"], "FAILED", 3, "ExitCode")
    assert attempt["node"] == stack.slurm.node_name and attempt["startTime"] and attempt["endTime"]
    stalled = {c["type"]: c for c in status["conditions"]}["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", "ExitCode")
    events = stack.kubectl("get", "events", "--field-selector", f"involvedObject.name={failing['exit3']}",
                           "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert "ExitCode" in events
    with stack.api() as api:
        rest = api.get(f"/api/v1/services/{failing['exit3']}/status").json()
    assert rest["last_failure"]["reason"] == "ExitCode" and rest["last_failure"]["exit_code"] == 3
    assert "about to exit 3" in rest["last_failure"]["log_tail"]


def test_a_job_over_its_memory_limit_reads_out_of_memory(stack, failing):
    status = finished(stack, failing["oom"], 90)
    failure = status["lastFailure"]
    assert status["phase"] == "failed" and failure["reason"] == "OutOfMemory", failure
    assert "exceeded memory limit" in failure["message"]  # slurmstepd's words
    assert "allocating 600 MB" in failure["logTail"]
    assert status["attempts"][-1]["reason"] == "OutOfMemory"


def test_a_job_at_its_time_limit_reads_timeout(stack, failing):
    # A one-minute limit: Slurm ends the job within its time-limit check and KillWait after that.
    status = finished(stack, failing["timeout"], 240)
    failure = status["lastFailure"]
    assert status["phase"] == "failed" and failure["reason"] == "Timeout", failure
    assert status["slurmState"] == "TIMEOUT" and "time limit" in failure["message"]
    assert f"serving forever in job {status['jobId']}" in failure["logTail"]
    assert status["attempts"][-1]["endState"] == "TIMEOUT"


def test_on_failure_restarts_twice_then_stays_failed_and_each_attempt_keeps_its_logs(stack, failing):
    name = failing["restarts"]
    status = stack.wait_for(name, lambda o: o.get("status", {}).get("phase") == "failed", 120,
                            what="failed after its restarts")["status"]
    assert status["restartCount"] == 2 and status["lastFailure"]["reason"] == "ExitCode"
    attempts = status["attempts"]
    assert [a["number"] for a in attempts] == [1, 2, 3]
    assert [a["startedBy"] for a in attempts] == ["Created", "Restart", "Restart"]
    assert all(a["reason"] == "ExitCode" and a["exitCode"] == 3 for a in attempts)
    assert len({a["jobId"] for a in attempts}) == 3 and status["jobId"] == attempts[-1]["jobId"]
    assert "nextAttemptTime" not in status and "no restart left (2 of 2 used)" in status["message"]
    events = stack.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}",
                           "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert events.count("Restarting") >= 1  # events of the same reason and message are counted into one

    with stack.api() as api:
        for attempt in attempts:
            body = api.get(f"/api/v1/services/{name}/logs", params={"attempt": attempt["number"]}).json()
            assert body["job_id"] == attempt["jobId"] and body["attempt"] == attempt["number"]
            assert f"attempt in job {attempt['jobId']}" in body["logs"]
            assert all(f"job {other['jobId']}" not in body["logs"] for other in attempts if other is not attempt)
        current = api.get(f"/api/v1/services/{name}/logs").json()
        assert current["attempt"] == 3 and current["job_id"] == attempts[-1]["jobId"]
        missing = api.get(f"/api/v1/services/{name}/logs", params={"attempt": 9})
        assert missing.status_code == 404 and "kept: 1, 2, 3" in missing.json()["detail"]
        # The console's log view reads the same attempts (its services are named by UID).
        uid = stack.kubectl("get", "ais", name, "-o", "jsonpath={.metadata.uid}").stdout
        detail = api.get(f"/ui/api/services/{uid}").json()
        assert [(a["number"], a["job_id"]) for a in detail["attempts"]] == [(a["number"], a["jobId"])
                                                                             for a in attempts]
        first = api.get(f"/ui/api/services/{uid}/logs", params={"attempt": 1}).json()
        assert first["attempt"] == 1 and f"attempt in job {attempts[0]['jobId']}" in first["logs"]
