"""Preflight on the real stack: a dry run checks a service against Kubernetes and the Slurm cluster and creates
nothing; through the REST API (POST /api/v1/services?dry_run=true) and kubectl (the lifecycle.aifactory.io/dry-run
annotation, answered in status.preflight). Where the cluster is reached over SSH, `sbatch --test-only` gives
Slurm's own start estimate.
"""

from __future__ import annotations

import json
import subprocess



ECHO = "testing/openai-echo"
DRY_RUN = "lifecycle.aifactory.io/dry-run"


def squeue_ids(stack) -> set[str]:
    """Every job slurmctld knows, also those that ended a moment ago."""
    done = subprocess.run(["squeue", "-h", "-o", "%i", "--states=all"],
                          env={**stack.slurm.env(), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          check=True)
    return set(done.stdout.split())


def newest_job(stack) -> int:
    return max((int(i) for i in squeue_ids(stack)), default=0)


def jobs_since(stack, newest: int) -> set[str]:
    """Jobs submitted after `newest` was the newest (job ids only grow; other tests' jobs may end meanwhile)."""
    return {i for i in squeue_ids(stack) if int(i) > newest}


def service_names(stack) -> set[str]:
    out = stack.kubectl("get", "ais", "-A", "-o", "jsonpath={.items[*].metadata.name}").stdout
    return set(out.split())


def dry_run(stack, **config) -> dict:
    with stack.api() as api:
        r = api.post("/api/v1/services", params={"dry_run": "true"}, json={"recipe_name": ECHO, "config": config})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_dry_run_with_an_unknown_partition_answers_in_slurms_words_and_creates_nothing(stack):
    services, newest = service_names(stack), newest_job(stack)
    answer = dry_run(stack, partition="no-such-partition", environment={"OPENAI_TEST_MODEL": "m"})
    assert answer["ok"] is False
    assert any("Invalid partition name specified" in p for p in answer["problems"]), answer["problems"]
    assert "openai_test_server" in answer["script"]  # the script it would have submitted
    assert service_names(stack) == services and not jobs_since(stack, newest)  # no resource, no job


def test_a_good_dry_run_returns_the_rendered_script_and_what_the_job_asks_for(stack):
    services, newest = service_names(stack), newest_job(stack)
    answer = dry_run(stack, environment={"OPENAI_TEST_MODEL": "m"}, resources={"cpu": 1, "time_limit": 5})
    assert answer["ok"] is True and answer["problems"] == [], answer
    assert answer["script"].startswith("#!/bin/bash") and "exec python3 -m aifactory.servers.openai_test_server" \
        in answer["script"]
    assert (answer["partition"], answer["cpus_per_task"], answer["time_limit_minutes"]) == (
        stack.slurm.partition, 1, 5)
    assert "OPENAI_TEST_MODEL" in answer["environment"] and "m" not in answer["environment"]
    # The default cluster is reached over slurmrestd only: no sbatch --test-only, and the answer says so.
    assert answer["slurm_estimate"] is None and any("sbatch --test-only" in n for n in answer["notes"])
    assert service_names(stack) == services and not jobs_since(stack, newest)


def test_a_dry_run_over_the_cpus_of_every_node_says_so(stack):
    answer = dry_run(stack, resources={"cpu": 64})
    assert answer["ok"] is False
    assert any(p.startswith("Requested node configuration is not available: 64 CPUs per task")
               for p in answer["problems"]), answer["problems"]


def test_the_dry_run_annotation_is_answered_in_status_and_submits_nothing_until_it_goes(stack, unique_name):
    newest = newest_job(stack)
    bad = unique_name("dry-bad")
    stack.apply({**stack.manifest(bad, ECHO, partition="no-such-partition"),
                 "metadata": {"name": bad, "namespace": "default", "annotations": {DRY_RUN: "true"}}})
    good = unique_name("dry-good")
    stack.apply({**stack.manifest(good, ECHO),
                 "metadata": {"name": good, "namespace": "default", "annotations": {DRY_RUN: "true"}}})
    try:
        refused = stack.wait_for(bad, lambda o: o.get("status", {}).get("preflight"), 30, what="a preflight")
        preflight = refused["status"]["preflight"]
        assert preflight["ok"] is False
        assert any("Invalid partition name specified" in p for p in preflight["problems"])
        cond = {c["type"]: c for c in refused["status"]["conditions"]}["Preflight"]
        assert (cond["status"], cond["reason"]) == ("False", "WouldNotRun")
        assert "Invalid partition name specified" in cond["message"]
        accepted = stack.wait_for(good, lambda o: o.get("status", {}).get("preflight"), 30, what="a preflight")
        assert accepted["status"]["preflight"]["ok"] is True and "jobId" not in accepted["status"]
        assert "openai_test_server" in accepted["status"]["preflight"]["script"]
        assert not jobs_since(stack, newest)  # nothing was submitted
        stack.kubectl("wait", "--for=condition=Preflight=true", f"ais/{good}", "--timeout=10s")

        # Without the annotation, the service runs.
        stack.kubectl("annotate", "ais", good, f"{DRY_RUN}-")
        running = stack.wait_for(good, lambda o: o.get("status", {}).get("phase") == "running", 120,
                                 what="running")
        assert running["status"]["jobId"] in squeue_ids(stack)
    finally:
        for name in (bad, good):
            stack.kubectl("delete", "ais", name, "--wait=false", "--ignore-not-found", check=False)
        for name in (bad, good):
            stack.wait_gone(name, 60)


def test_over_ssh_sbatch_test_only_gives_slurms_start_estimate(stack, login_node, unique_name):
    """A SlurmCluster reached over SSH (ssh-cli, the login node being a real sshd in front of the local Slurm):
    the dry run runs `sbatch --test-only` there."""
    name = unique_name("login")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "aifactory-system"},
              "stringData": {"ssh-privatekey": login_node.private_key()}}
    cluster = {"apiVersion": "aifactory.io/v1alpha1", "kind": "SlurmCluster", "metadata": {"name": name},
               "spec": {"transport": "ssh-cli", "user": login_node.user,
                        "ssh": {"host": "127.0.0.1", "port": login_node.port, "user": login_node.user,
                                "keySecretRef": {"name": name}, "knownHosts": login_node.known_hosts()},
                        "cli": {"environment": stack.slurm.env()},
                        "workingDirectory": str(stack.slurm.jobs_dir), "localLogs": True}}
    stack.kubectl("apply", "-f", "-", stdin=json.dumps(secret))
    stack.kubectl("apply", "-f", "-", stdin=json.dumps(cluster))
    try:
        newest = newest_job(stack)
        answer = dry_run(stack, cluster=name, resources={"cpu": 1, "time_limit": 5})
        assert answer["ok"] is True, answer
        assert answer["slurm_estimate"].startswith("Job ") and " to start at " in answer["slurm_estimate"]
        assert answer["expected_start"] and answer["expected_start"] in answer["slurm_estimate"]
        refused = dry_run(stack, cluster=name, partition="no-such-partition")
        assert refused["ok"] is False
        assert any("Invalid partition name specified" in p for p in refused["problems"]), refused["problems"]
        assert any(p.startswith("sbatch --test-only:") for p in refused["problems"])  # sbatch's own words too
        assert not jobs_since(stack, newest)  # --test-only submits nothing
    finally:
        stack.kubectl("delete", "slurmcluster", name, "--ignore-not-found", "--timeout=60s", check=False)
        stack.kubectl("delete", "secret", name, "-n", "aifactory-system", "--ignore-not-found", check=False)
