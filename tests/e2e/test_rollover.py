"""Walltime rollover on the real stack: a service outlives its jobs' time limits with no failed request.

The long scenario (two walltime rollovers and a spec change, about three minutes) runs once per session. The
local node has 2 CPUs and a rollover briefly needs two 1-CPU jobs, so nothing else runs beside it.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class Traffic:
    """A client sending one prompt every 100 ms through the REST API, as a user of the endpoint would."""

    stack: object
    service: str
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Traffic":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with self.stack.api() as api:
            while not self._stop.is_set():
                began = time.monotonic()
                self.sent += 1
                try:
                    r = api.post(f"/api/v1/vllm/{self.service}/prompt", json={"prompt": "hi", "max_tokens": 5},
                                 timeout=10)
                    if r.status_code == 200:
                        self.models.append(r.json()["model"])
                    else:
                        self.failures.append(f"{time.strftime('%X')} {r.status_code} {r.text[:300]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{time.strftime('%X')} {type(exc).__name__}: {exc}")
                self._stop.wait(max(0.0, 0.1 - (time.monotonic() - began)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)


def squeue_ids(stack) -> set[str]:
    done = subprocess.run(["squeue", "-h", "-o", "%i"], env={**stack.slurm.env(), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def events(stack, name: str) -> list[dict]:
    out = stack.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json").stdout
    return json.loads(out)["items"]


def conditions(obj: dict) -> dict:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}


def test_two_walltime_rollovers_and_a_spec_change_with_no_failed_request(stack, services, unique_name):
    name = services(unique_name("roll"), "testing/openai-echo", env={"OPENAI_TEST_MODEL": "first"},
                    resources={"timeLimit": 2},
                    rollover={"leadMinutes": 1, "drainSeconds": 10, "warnMinutes": 1})
    first = stack.wait_for(name, lambda o: o.get("status", {}).get("phase") == "running", 120,
                           what="running")["status"]
    traffic = Traffic(stack, name).start()
    answered_at = []  # requests answered by the time of each rollover: the client ran through every one of them
    try:
        # Two walltime rollovers: a successor a minute before each 2-minute job ends, healthy, switched to.
        for n in (1, 2):
            stack.wait_for(name, lambda o, n=n: (o["status"].get("rollovers") or 0) >= n, 240,
                           what=f"walltime rollover {n}")
            answered_at.append(len(traffic.models))
        stack.wait_for(name, lambda o: not o["status"].get("draining"), 60, what="the old jobs drained")
        # A spec change rolls over the same way: the new job first, the old one after.
        stack.kubectl("patch", "ais", name, "--type=merge", "-p",
                      json.dumps({"spec": {"env": {"OPENAI_TEST_MODEL": "second"}}}))
        final = stack.wait_for(name, lambda o: (o["status"].get("rollovers") or 0) >= 3
                               and not o["status"].get("draining"), 90, what="the spec change rolled over")["status"]
        deadline = time.monotonic() + 10
        while (not traffic.models or traffic.models[-1] != "second") and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        traffic.stop()

    assert traffic.failures == [], f"{len(traffic.failures)} of {traffic.sent} requests failed"
    answered_at.append(len(traffic.models))
    assert 0 < answered_at[0] < answered_at[1] < answered_at[2], answered_at
    assert traffic.models[0] == "first" and traffic.models[-1] == "second"
    print(f"\nrollover: {traffic.sent} requests, {len(traffic.failures)} failed; answered by each rollover: "
          f"{answered_at}")

    attempts = final["attempts"]
    assert [a["startedBy"] for a in attempts[:4]] == ["Created", "Rollover", "Rollover", "SpecChanged"], (
        json.dumps(attempts, indent=1), [(e["reason"], e["message"]) for e in events(stack, name)])
    assert [a["reason"] for a in attempts[:3]] == ["RolledOver"] * 3
    assert final["jobId"] == attempts[3]["jobId"] and final["phase"] == "running"
    old_jobs = [a["jobId"] for a in attempts[:3]]
    assert old_jobs[0] == first["jobId"]
    # The old jobs are gone from the queue (the last one was cancelled a moment ago: it may still be completing).
    deadline = time.monotonic() + 30
    while squeue_ids(stack) & set(old_jobs) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not squeue_ids(stack) & set(old_jobs)
    assert all(stack.slurm_job(job_id)["job_state"] == "CANCELLED" for job_id in old_jobs)

    rolled = sorted(e["message"] for e in events(stack, name) if e["reason"] == "RolledOver")
    assert rolled == sorted([f"Rolled over from job {old_jobs[0]} to job {old_jobs[1]} (walltime)",
                      f"Rolled over from job {old_jobs[1]} to job {old_jobs[2]} (walltime)",
                      f"Rolled over from job {old_jobs[2]} to job {final['jobId']} (spec change)"]), rolled
    with stack.api() as api:
        assert api.get(f"/api/v1/services/{name}").json()["job_id"] == final["jobId"]


def scontrol(stack, *args: str) -> None:
    subprocess.run(["scontrol", *args], env={**stack.slurm.env(), "PATH": "/usr/bin:/bin"}, check=True,
                   capture_output=True)


def test_a_successor_still_queued_when_the_old_job_ends_is_said_and_the_endpoint_is_not_ready(stack, services,
                                                                                            unique_name):
    # A one-minute job: its successor is due half-way (the lead is cut to half the time limit). A blocker takes the
    # node's other CPU, so the successor queues (Resources); it is then held, so that it stays queued even once
    # the first job's CPU is free.
    blocker = services(unique_name("blocker"), "testing/openai-echo", resources={"cpu": stack.slurm_cpus() - 1},
                       rollover={"enabled": False})
    name = services(unique_name("late"), "testing/openai-echo", resources={"timeLimit": 1},
                    rollover={"leadMinutes": 1, "drainSeconds": 5, "warnMinutes": 1})
    first = stack.wait_for(name, lambda o: o.get("status", {}).get("phase") == "running", 120,
                           what="running")["status"]
    stack.wait_for(blocker, lambda o: o.get("status", {}).get("phase") == "running", 120, what="running")
    successor = stack.wait_for(name, lambda o: o["status"].get("successor"), 60, what="a successor")
    successor_id = successor["status"]["successor"]["jobId"]
    scontrol(stack, "hold", successor_id)
    warned = stack.wait_for(name, lambda o: "JobHeldAdmin" in conditions(o).get("WalltimeExpiring", {})
                            .get("message", ""), 30, what="the walltime warning naming the held successor")
    warning = conditions(warned)["WalltimeExpiring"]
    assert (warning["status"], warning["reason"]) == ("True", "SuccessorNotReady")
    assert f"successor job {successor_id}" in warning["message"]

    # The first job reaches its time limit: the held successor becomes the current job, not ready.
    late = stack.wait_for(name, lambda o: o["status"].get("jobId") == successor_id, 180,
                          what="the successor to become the current job")
    status = late["status"]
    assert status["phase"] == "pending" and "endpoint" not in status
    assert status["pendingReason"] == "JobHeldAdmin"
    conds = conditions(late)
    assert conds["Ready"]["status"] == "False"
    assert (conds["Scheduled"]["status"], conds["Scheduled"]["reason"]) == ("False", "JobHeldAdmin")
    assert (conds["RollingOver"]["status"], conds["RollingOver"]["reason"]) == ("True", "PredecessorEnded")
    assert f"Job {first['jobId']} ended (TIMEOUT)" in conds["RollingOver"]["message"]
    with stack.api() as api:
        rest = api.get(f"/api/v1/services/{name}").json()
        assert (rest["status"], rest["endpoint"], rest["pending_reason"]) == ("pending", None, "JobHeldAdmin")
        refused = api.post(f"/api/v1/vllm/{name}/prompt", json={"prompt": "hi"})
        assert refused.status_code == 503
    assert any(e["reason"] == "RolloverLate" for e in events(stack, name))

    # Released, it runs and the service is ready again.
    scontrol(stack, "release", successor_id)
    ready = stack.wait_for(name, lambda o: o["status"].get("phase") == "running", 120, what="running again")
    assert conditions(ready)["RollingOver"]["status"] == "False"
    assert ready["status"]["attempts"][0]["reason"] == "Timeout"
