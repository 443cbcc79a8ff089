"""B1 submit overhead and B2 readiness lag, measured on the same services, one after the other.

B1: from creating an AIService to status.jobId appearing (seen by a watch), against a bare slurmrestd submit of
an equivalent job made in the same repetition. Both go through one timing proxy in front of slurmrestd (the
services' SlurmCluster `bench-timed` is `default` pointed at it), so both pay the same hop and B1 can be told
part by part: the create call, the submit reaching slurmrestd and its answer, and the status write seen by
the watch (kopf adds its finalizer after that write). B2: from the first moment the service's
health path answers (the benchmark probes the port it reads from the job's comment, straight from slurmrestd)
to status.phase = running.
"""

from __future__ import annotations

import time

import httpx

from aifactory.slurm.jobs import FINISHED_STATES, JobTags
from bench.context import ECHO_RECIPE, Context
from bench.counting_proxy import CountingProxy
from bench.report import Benchmark, Figure, fmt
from bench.stack import BareSlurm, say
from bench.stats import ratio, summary

PROBE_EVERY = 0.02  # s between health probes: the resolution of B2
COMMENT_EVERY = 0.05  # s between reads of the job's comment
STEP_TIMEOUT = 90.0
PENDING_PATIENCE = 240.0  # s a service's job may wait for a CPU (the node is shared) before B2 gives up
TIMED = "bench-timed"  # the SlurmCluster of B1's services: `default` through the timing proxy
# B1's parts, each from the create call's start (monotonic), in the order they happen.
PARTS = (("create call returned", "created"), ("submit reached slurmrestd", "submit_in"),
         ("slurmrestd answered", "submit_out"), ("status.jobId seen", "job_id"))


def timed_cluster(ctx: Context) -> CountingProxy:
    """SlurmCluster bench-timed: the default one with its url pointed at a fresh timing proxy."""
    proxy = CountingProxy(ctx.access.slurm_url).start()
    default = ctx.kube.cluster("default")
    if default is None:
        raise RuntimeError("SlurmCluster 'default' does not exist: run `aifactory dev up` first")
    if ctx.kube.cluster(TIMED) is not None:  # left by an interrupted run
        ctx.kube.delete_cluster(TIMED)
        time.sleep(2)
    ctx.kube.create_cluster(TIMED, {**default["spec"], "url": proxy.url})
    deadline = time.monotonic() + 60
    while not any("/jobs" in k for k in proxy.snapshot()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the operator did not poll SlurmCluster {TIMED} within 60s")
        time.sleep(0.2)
    return proxy


def bare_job(ctx: Context, index: int) -> tuple[dict, str]:
    """A job like the one the operator submits for the echo recipe: same partition, CPUs, memory and time."""
    job = {
        "name": f"{ctx.name('bare')}-{index}",
        "partition": "debug",
        "cpus_per_task": 1,
        "memory_per_node": 256,
        "time_limit": 30,
        "nodes": 1,
        "current_working_directory": "/tmp",
        "standard_output": "/dev/null",
        "standard_error": "/dev/null",
        "environment": {"PATH": "/usr/local/bin:/usr/bin:/bin"},
        "comment": f"aifactory-bench bare run={ctx.run_id}",
    }
    return job, "#!/bin/bash\nexec sleep 600\n"


def _wait_endpoint(ctx: Context, job_id: str) -> tuple[str | None, str]:
    """node:port of the service as soon as the job publishes it in its comment, or why there is none."""
    pending_until = time.monotonic() + PENDING_PATIENCE
    running_until = None
    while True:
        job = ctx.slurm.job(job_id) or {}
        state = job.get("job_state") or "UNKNOWN"
        tags = JobTags.parse(job.get("comment"))
        if tags.port and job.get("batch_host"):
            return f"http://{ctx.slurm.node_address(job['batch_host'])}:{tags.port}", ""
        now = time.monotonic()
        if state in FINISHED_STATES:
            return None, f"job {job_id} ended {state} before publishing its port"
        if state == "PENDING" and now > pending_until:
            return None, (f"job {job_id} still PENDING ({job.get('state_reason')}) after {PENDING_PATIENCE:.0f}s: "
                          "no free CPU on the node")
        if state == "RUNNING":
            running_until = running_until or now + STEP_TIMEOUT
            if now > running_until:
                return None, f"job {job_id} ran {STEP_TIMEOUT:.0f}s without publishing its port"
        time.sleep(COMMENT_EVERY)


def _first_healthy(url: str, deadline: float) -> float | None:
    with httpx.Client(timeout=0.5, trust_env=False) as probe:
        while time.monotonic() < deadline:
            try:
                if probe.get(url).status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(PROBE_EVERY)
    return None


def run(ctx: Context) -> tuple[Benchmark, Benchmark]:
    proxy = timed_cluster(ctx)
    bare_slurm = BareSlurm(ctx.access, url=proxy.url)
    try:
        return _run(ctx, proxy, bare_slurm)
    finally:
        bare_slurm.close()
        ctx.kube.delete_cluster(TIMED)
        proxy.stop()


def _run(ctx: Context, proxy: CountingProxy, bare_slurm: BareSlurm) -> tuple[Benchmark, Benchmark]:
    reps = ctx.sizes.reps
    b1 = Benchmark("B1", "Submit overhead: AIService created -> status.jobId, against a bare slurmrestd submit",
                   config={"N": reps, "repetitions": 1, "recipe": ECHO_RECIPE, "namespace": ctx.namespace,
                           "cluster": f"{TIMED} (default through a timing proxy; the bare submit too)",
                           "bare client": "httpx, POST /slurm/v0.0.38/job/submit, keep-alive"})
    b2 = Benchmark("B2", "Readiness lag: health path first answers -> status.phase running",
                   config={"N": reps, "recipe": ECHO_RECIPE, "probe interval": f"{PROBE_EVERY * 1000:.0f} ms",
                           "operator observe interval": "AIFACTORY_OBSERVE_INTERVAL (default 1 s)"})
    say(f"B1/B2: {reps} services of {ECHO_RECIPE}, one after the other, each with a bare submit before it")
    aif, bare, lags, startups, create_calls = [], [], [], [], []
    parts: dict[str, list[float]] = {key: [] for _, key in PARTS}
    problems: list[str] = []
    no_cpu = False  # once a job waited too long for a CPU, B2 is skipped for the rest (B1 needs no CPU)
    service_jobs: dict[str, str] = {}  # service -> its job, each to be gone once its service is deleted
    for i in range(reps):
        job, script = bare_job(ctx, i)
        started = time.monotonic()
        bare_id = bare_slurm.submit(job, script)
        bare.append(time.monotonic() - started)
        bare_slurm.cancel(bare_id)

        name = ctx.name(f"s{i}")
        created = time.monotonic()
        ctx.kube.create_service(ctx.namespace, name, {"recipe": ECHO_RECIPE, "cluster": TIMED})
        create_calls.append(time.monotonic() - created)
        try:
            if not ctx.watch.wait(lambda seen, n=name: bool(seen.get(n) and seen[n].job_id_at), STEP_TIMEOUT,
                                  f"{name} to get a job id"):
                problems.append(f"{name}: no job id within {STEP_TIMEOUT:.0f}s")
                continue
            seen = ctx.watch.get(name)
            aif.append(seen.job_id_at - created)
            job_id = service_jobs[name] = seen.status["jobId"]
            submits = proxy.answered("POST", "/job/submit", after=created)
            moments = {"created": created + create_calls[-1],
                       "submit_in": submits[0][0] if submits else None,
                       "submit_out": submits[0][1] if submits else None, "job_id": seen.job_id_at}
            for key, at in moments.items():
                if at is not None:
                    parts[key].append(at - created)
            if no_cpu:
                say(f"  {i + 1}/{reps}: job id after {aif[-1] * 1000:.0f} ms (bare submit {bare[-1] * 1000:.1f} ms)")
                continue
            endpoint, why = _wait_endpoint(ctx, job_id)
            if endpoint is None:
                problems.append(f"{name}: {why}")
                no_cpu = "PENDING" in why
                continue
            healthy_at = _first_healthy(f"{endpoint}/health", time.monotonic() + STEP_TIMEOUT)
            if healthy_at is None:
                problems.append(f"{name}: {endpoint}/health never answered 200 within {STEP_TIMEOUT:.0f}s")
                continue
            if not ctx.watch.wait(lambda s, n=name: "running" in s[n].phase_at or "failed" in s[n].phase_at,
                                  STEP_TIMEOUT, f"{name} to be running"):
                problems.append(f"{name}: never running")
                continue
            seen = ctx.watch.get(name)
            if "running" not in seen.phase_at:
                problems.append(f"{name}: failed: {seen.status.get('message')}")
                continue
            lags.append(seen.phase_at["running"] - healthy_at)
            startups.append(healthy_at - seen.job_id_at)
            say(f"  {i + 1}/{reps}: job id after {aif[-1] * 1000:.0f} ms (bare submit {bare[-1] * 1000:.1f} ms), "
                f"running {lags[-1] * 1000:.0f} ms after its health path answered")
        finally:
            ctx.kube.delete_service(ctx.namespace, name)
            ctx.watch.wait(lambda s, n=name: s[n].deleted_at is not None, STEP_TIMEOUT, f"{name} to be deleted")

    # Before the timing proxy (the services' way to slurmrestd) goes: a job the operator could not cancel yet
    # would be left running for good.
    for left in _jobs_left_running(ctx, service_jobs):
        problems.append(left)
        b1.notes.append(left)
    a, b = summary(aif), summary(bare)
    c = summary(create_calls)
    b1.raw = {"aifactory_seconds": aif, "bare_seconds": bare, "kube_create_call_seconds": create_calls,
              "aifactory": a, "bare": b, "kube_create_call": c,
              "parts_seconds_from_create": parts, "parts": {key: summary(v) for key, v in parts.items()}}
    raw = (f"aifactory p50 {fmt(_ms(a['p50']), 'ms')}, p95 {fmt(_ms(a['p95']), 'ms')} (of which the Kubernetes "
           f"create call p50 {fmt(_ms(c['p50']), 'ms')}); bare p50 {fmt(_ms(b['p50']), 'ms')}, "
           f"p95 {fmt(_ms(b['p95']), 'ms')}; n={a['n']}")
    b1.figures = [
        Figure.checked("p50 ratio aifactory / bare", ratio(a["p50"], b["p50"]), "x", raw, "<=", 3),
        Figure("p95 ratio aifactory / bare", ratio(a["p95"], b["p95"]), "x", raw),
    ]
    timeline = ", ".join(f"{label} {fmt(_ms(summary(parts[key])['p50']), 'ms')}" for label, key in PARTS
                         if parts[key])
    b1.figures.append(Figure("create -> status.jobId, part by part", _ms(a["p50"]), "ms",
                             f"p50 from the create call's start: {timeline or 'no part was seen'}"))
    b1.notes.append("aifactory's time includes the Kubernetes create call, the watch event to the operator, "
                    "its adoption check (in its poller's cache), the submit itself, the status patch and the watch "
                    "event back; kopf adds its finalizer after the status patch. Part by part (p50, ms from the "
                    f"create call's start): {timeline}.")
    l, s = summary(lags), summary(startups)
    b2.raw = {"lag_seconds": lags, "health_after_job_id_seconds": startups, "lag": l}
    raw2 = (f"p50 {fmt(l['p50'], 's')}, p95 {fmt(l['p95'], 's')}, n={l['n']}; the health path first answered "
            f"{fmt(s['p50'], 's')} (p50) after the job id")
    b2.figures = [
        Figure.checked("readiness lag p50", l["p50"], "s", raw2, "<=", 1),
        Figure("readiness lag p95", l["p95"], "s", raw2),
    ]
    b2.notes.append("A negative lag would mean the operator called the service running before the benchmark's own "
                    f"probe saw it answer (the probe's resolution is {PROBE_EVERY * 1000:.0f} ms).")
    for problem in problems:
        b2.notes.append(problem)
    if no_cpu:
        b2.notes.append("B2 stopped waiting for CPUs after that; B1 went on (a job id needs no CPU).")
    if not aif:
        b1.not_measured, b1.figures = "no service got a job id: " + "; ".join(problems), []
    if not lags:
        b2.not_measured, b2.figures = "no service became running: " + "; ".join(problems), []
    return b1, b2


def _jobs_left_running(ctx: Context, service_jobs: dict[str, str], patience: float = 30.0) -> list[str]:
    """The jobs of deleted services still live after `patience` seconds, said and then cancelled here."""
    deadline = time.monotonic() + patience
    live = dict(service_jobs)
    while live:
        for name, job_id in list(live.items()):
            job = ctx.slurm.job(job_id)
            if job is None or job.get("job_state") in FINISHED_STATES:
                del live[name]
        if not live or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for job_id in live.values():
        ctx.slurm.cancel(job_id)
    return [f"{name}: its job {job_id} still ran {patience:.0f}s after the service was deleted"
            for name, job_id in live.items()]


def _ms(seconds: float | None) -> float | None:
    return seconds * 1000 if seconds is not None else None
