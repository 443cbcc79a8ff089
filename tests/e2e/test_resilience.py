"""Resilience on the real stack: the operator killed between submit and status update, slurmrestd down for 30 s,
and the cost of 50 services to slurmctld. A loopback proxy in front of the real slurmrestd
(tests/e2e/slurmrestd_proxy.py) holds answers and counts requests; SlurmCluster `proxied` points at it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from aifactory.devstack import stack as devstack
from aifactory.devstack.process import ManagedProcess, pid_alive, wait_until
from aifactory.devstack.slurm import LocalSlurm

from slurmrestd_proxy import SlurmrestdProxy

POLL_INTERVAL = 2
HELD_PARTITION = "aifactory-held"


def phase(obj: dict | None) -> str | None:
    return ((obj or {}).get("status") or {}).get("phase")


def condition(obj: dict | None, kind: str) -> dict:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}.get(kind, {})


@pytest.fixture(scope="module")
def proxy(stack):
    upstream = LocalSlurm()
    p = SlurmrestdProxy(upstream.rest_host, upstream.rest_port).start()
    yield p
    p.release.set()
    p.stop()


@pytest.fixture(scope="module")
def proxied(stack, proxy):
    """SlurmCluster `proxied`: the default cluster's spec (same token Secret), slurmrestd through the proxy."""
    default = json.loads(stack.kubectl("get", "slurmcluster", "default", "-o", "json").stdout)
    spec = {**default["spec"], "url": proxy.url, "pollIntervalSeconds": POLL_INTERVAL}
    stack.apply({"apiVersion": "aifactory.io/v1alpha1", "kind": "SlurmCluster", "metadata": {"name": "proxied"},
                 "spec": spec})
    wait_until(lambda: proxy.counts().get("GET /slurm/v0.0.38/jobs"), 60, "the operator polling through the proxy")
    yield "proxied"
    stack.kubectl("delete", "slurmcluster", "proxied", "--ignore-not-found", "--wait=false", check=False)


def test_operator_killed_between_submit_and_status_update_adopts_the_one_job(stack, proxy, proxied, services,
                                                                              unique_name):
    proxy.submit_forwarded.clear()
    proxy.release.clear()
    proxy.hold_submits = True
    name = services(unique_name("crash"), "testing/openai-echo", cluster=proxied)
    assert proxy.submit_forwarded.wait(120), "the operator never submitted through the proxy"

    # slurmrestd has the job; the operator has not heard back. Kill it now.
    pid = devstack.OPERATOR.pid()
    assert pid and pid_alive(pid)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 10, "the operator to die")
    proxy.hold_submits = False
    proxy.release.set()  # the held answer goes to a dead connection
    assert "jobId" not in (stack.get(name).get("status") or {})

    subprocess.run([sys.executable, "-m", "aifactory", "dev", "up"], check=True, timeout=600,
                   stdout=subprocess.DEVNULL)
    assert devstack.OPERATOR.pid() != pid

    uid = stack.get(name)["metadata"]["uid"]
    running = stack.wait_for(name, lambda o: phase(o) == "running", 300, what="running after the restart")
    jobs = stack.slurm_jobs_tagged(uid)
    assert len(jobs) == 1, [(j["job_id"], j["job_state"], j["comment"]) for j in jobs]
    assert running["status"]["jobId"] == str(jobs[0]["job_id"])
    assert jobs[0]["job_state"] == "RUNNING"


@pytest.fixture
def proxied_slow(stack, proxy):
    """Like `proxied`, but its poller asks Slurm only every 60 s: an adoption check cannot lean on a fresh cache."""
    default = json.loads(stack.kubectl("get", "slurmcluster", "default", "-o", "json").stdout)
    spec = {**default["spec"], "url": proxy.url, "pollIntervalSeconds": 60}
    stack.apply({"apiVersion": "aifactory.io/v1alpha1", "kind": "SlurmCluster", "metadata": {"name": "proxied-slow"},
                 "spec": spec})
    wait_until(lambda: json.loads(stack.kubectl("get", "slurmcluster", "proxied-slow", "-o", "json").stdout)
               .get("status", {}).get("reachable") is True, 60, "SlurmCluster proxied-slow reachable")
    yield "proxied-slow"
    stack.kubectl("delete", "slurmcluster", "proxied-slow", "--ignore-not-found", "--wait=false", check=False)


def test_an_ambiguous_submit_is_adopted_from_slurms_answer_not_repeated(stack, proxy, proxied_slow, services,
                                                                        unique_name):
    # slurmrestd takes the job, but the answer is lost (a gateway's 504): the submit may or may not have happened.
    # Before submitting again the operator must ask Slurm itself, not its poller's cache (60 s old here).
    proxy.gateway_timeouts = 1
    name = services(unique_name("ambiguous"), "testing/openai-echo", cluster=proxied_slow)
    status = stack.wait_for(name, lambda o: (o.get("status") or {}).get("jobId"), 120, what="a job id")["status"]
    assert proxy.gateway_timeouts == 0, "the submit never went through the proxy"
    uid = stack.get(name)["metadata"]["uid"]
    jobs = stack.slurm_jobs_tagged(uid)
    assert [str(j["job_id"]) for j in jobs] == [status["jobId"]], \
        [(j["job_id"], j["job_state"], j["comment"]) for j in jobs]


def test_slurmrestd_outage_changes_no_phase_and_recovers(stack, services, unique_name):
    name = services(unique_name("outage"), "testing/openai-echo")
    stack.wait_for(name, lambda o: phase(o) == "running", 300, what="running")
    slurmrestd = ManagedProcess("slurmrestd")  # the stack's own, as LocalSlurm starts it
    assert slurmrestd.stop(), "slurmrestd was not running"
    phases: list[str] = []
    unreachable: dict = {}
    try:
        started = time.monotonic()
        while time.monotonic() - started < 30:
            obj = stack.get(name)
            phases.append(phase(obj))
            if condition(obj, "SlurmReachable").get("status") == "False":
                unreachable = condition(obj, "SlurmReachable")
            time.sleep(1)
    finally:
        LocalSlurm().up(progress=lambda line: None)
    assert "failed" not in phases and set(phases) == {"running"}, phases
    assert unreachable, "no SlurmReachable=False condition during the outage"
    assert "unreachable" in unreachable["message"].lower() or "connect" in unreachable["message"].lower()

    back = stack.wait_for(name, lambda o: condition(o, "SlurmReachable").get("status") == "True", 120,
                          what="SlurmReachable=True after the restart")
    assert phase(back) == "running"
    cluster = json.loads(stack.kubectl("get", "slurmcluster", "default", "-o", "json").stdout)
    wait_until(lambda: json.loads(stack.kubectl("get", "slurmcluster", "default", "-o", "json").stdout)
               .get("status", {}).get("reachable") is True, 60, "the SlurmCluster reachable again")
    assert cluster["spec"]["url"] == stack.slurm.url


@pytest.fixture
def held_partition(stack):
    """A partition that accepts jobs and never runs them (State=DOWN), so 50 jobs take no CPU."""
    def scontrol(*args: str) -> None:
        subprocess.run(["scontrol", *args], env={**os.environ, **stack.slurm.env()}, check=True,
                       capture_output=True, timeout=30)
    scontrol("create", f"PartitionName={HELD_PARTITION}", "Nodes=ALL", "State=DOWN")
    yield HELD_PARTITION
    subprocess.run(["scontrol", "delete", f"PartitionName={HELD_PARTITION}"],
                   env={**os.environ, **stack.slurm.env()}, capture_output=True, timeout=30)


def test_fifty_services_cost_one_or_two_requests_per_poll_interval(stack, proxy, proxied, held_partition,
                                                                    unique_name):
    names = [unique_name("cost") for _ in range(50)]
    items = [{"apiVersion": "aifactory.io/v1alpha1", "kind": "AIService", "metadata": {"name": n, "namespace": "default"},
              "spec": {"recipe": "testing/openai-echo", "cluster": proxied, "partition": held_partition}}
             for n in names]
    stack.kubectl("apply", "-f", "-", stdin=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    try:
        def all_submitted() -> bool:
            listed = json.loads(stack.kubectl("get", "aiservices", "-n", "default", "-o", "json").stdout)["items"]
            mine = [o for o in listed if o["metadata"]["name"] in names]
            return len(mine) == 50 and all((o.get("status") or {}).get("jobId") for o in mine)

        wait_until(all_submitted, 300, "all 50 services submitted", interval=2)
        time.sleep(3 * POLL_INTERVAL)  # let the submissions' wake-ups settle

        window = 10 * POLL_INTERVAL
        start = time.time()
        time.sleep(window)
        counts = proxy.counts(since=start)
        polls = counts.get("GET /slurm/v0.0.38/jobs", 0)
        # A new bridge (the shared operator restarted by someone else) detects the version once: not a poll cost.
        detections = counts.get("GET /openapi/v3", 0)
        # The nodes are read once per node interval for the whole cluster (the SlurmCluster's summary), not per
        # service: allowed, and bounded.
        node_reads = counts.get("GET /slurm/v0.0.38/nodes", 0)
        others = {k: v for k, v in counts.items()
                  if k not in ("GET /slurm/v0.0.38/jobs", "GET /openapi/v3", "GET /slurm/v0.0.38/nodes")}
        per_interval = polls / (window / POLL_INTERVAL)
        print(f"requests to slurmrestd in {window}s with 50 services: {dict(counts)}")
        assert 0.5 <= per_interval <= 2, counts
        assert detections <= 1 and not others, f"requests besides the poll while nothing changes: {counts}"
        assert node_reads <= window / 5 + 1, counts  # at most one per 5 s (the local stack's node interval)
        for name in names[:3]:
            assert phase(stack.get(name)) == "pending"
    finally:
        stack.kubectl("delete", "aiservices", *names, "-n", "default", "--wait=false", "--ignore-not-found",
                      check=False)
        for name in names:
            stack.wait_gone(name, 120)
