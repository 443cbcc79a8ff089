"""Queue-aware status on the real stack: Slurm's pending reason and expected start, in kubectl and the REST API."""

from __future__ import annotations

import subprocess


def scontrol(stack, *args: str) -> str:
    done = subprocess.run(["scontrol", *args], env={**stack.slurm.env(), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=True)
    return done.stdout


def squeue_start(stack, job_id: str) -> str:
    done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%S"], env={**stack.slurm.env(),
                          "PATH": "/usr/bin:/bin", "TZ": "UTC"}, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def wide_column(stack, name: str, column: str) -> str:
    """One column of `kubectl get ais -o wide`, cut at the header's positions (empty cells are blank)."""
    header, row = stack.kubectl("get", "ais", name, "-o", "wide").stdout.splitlines()[:2]
    start = header.index(column)
    rest = header[start + len(column):]
    end = start + len(column) + (len(rest) - len(rest.lstrip())) if rest.strip() else len(row)
    return row[start:end].strip()


def conditions(obj: dict) -> dict:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}


def test_a_held_job_says_so_and_a_queued_one_says_when_it_should_start(stack, services, unique_name):
    # A first service takes every CPU of the one node (for its recipe's 30 minutes), so the second one queues.
    blocker = services(unique_name("blocker"), "testing/openai-echo", resources={"cpu": stack.slurm_cpus()})
    stack.wait_for(blocker, lambda o: o.get("status", {}).get("phase") == "running", 120, what="running")
    name = services(unique_name("queued"), "testing/openai-echo")
    job_id = stack.wait_for(name, lambda o: o.get("status", {}).get("jobId"), 30, what="a job id")["status"]["jobId"]

    # Held by the admin: Slurm's reason, and no expected start (Slurm gives none for a held job).
    scontrol(stack, "hold", job_id)
    obj = stack.wait_for(name, lambda o: o["status"].get("pendingReason") == "JobHeldAdmin", 30,
                         what="pendingReason JobHeldAdmin")
    scheduled = conditions(obj)["Scheduled"]
    assert (scheduled["status"], scheduled["reason"]) == ("False", "JobHeldAdmin")
    assert "expectedStart" not in obj["status"] and "no expected start" in scheduled["message"]
    stack.kubectl("wait", "--for=condition=Scheduled=false", f"ais/{name}", "--timeout=10s")
    assert wide_column(stack, name, "PENDING-REASON") == "JobHeldAdmin"
    with stack.api() as api:
        rest = api.get(f"/api/v1/services/{name}/status").json()
        assert (rest["status"], rest["pending_reason"], rest["expected_start"]) == ("pending", "JobHeldAdmin", None)

    # Released: queued behind the blocker until Slurm's backfill scheduler estimates when it starts.
    scontrol(stack, "release", job_id)
    obj = stack.wait_for(name, lambda o: o["status"].get("expectedStart"), 150, what="an expected start")
    expected = obj["status"]["expectedStart"]
    assert expected == squeue_start(stack, job_id) + "Z"  # Slurm's own estimate, as squeue shows it
    reason = obj["status"]["pendingReason"]
    assert reason in ("Resources", "Priority")
    scheduled = conditions(obj)["Scheduled"]
    assert (scheduled["status"], scheduled["reason"]) == ("False", reason) and expected in scheduled["message"]
    with stack.api() as api:
        rest = api.get(f"/api/v1/services/{name}").json()
        assert (rest["pending_reason"], rest["expected_start"]) == (reason, expected)
    assert wide_column(stack, name, "EXPECTED-START") == expected

    # The blocker goes: the job runs, Scheduled turns True and the queue fields go.
    stack.kubectl("delete", "ais", blocker, "--wait=false")
    obj = stack.wait_for(name, lambda o: o["status"].get("phase") == "running", 120, what="running")
    scheduled = conditions(obj)["Scheduled"]
    assert (scheduled["status"], scheduled["reason"]) == ("True", "Started")
    assert "pendingReason" not in obj["status"] and "expectedStart" not in obj["status"]
    with stack.api() as api:
        rest = api.get(f"/api/v1/services/{name}/status").json()
        assert (rest["pending_reason"], rest["expected_start"]) == (None, None)
