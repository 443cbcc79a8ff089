"""B4 scale: many AIService objects: operator memory, the REST API's list, and how fast a restarted operator settles.

The objects are the fleet's (B3's) services topped up to the full count: real Slurm jobs kept PENDING in a DOWN
partition. For the restart the operator is stopped (SIGTERM to its pid), every fleet job is cancelled in Slurm
while it is down, and `aifactory dev up` starts it again. It has settled when every object's status says
`cancelled` (it has looked at each object and at Slurm) and its CPU use then stays under 5% of a core for 2 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from bench.fleet import CLUSTER, Fleet
from bench.report import Benchmark, Figure, fmt
from bench.stack import api_answers, operator_process, say, stop_process
from bench.stats import summary

QUIET_SHARE = 0.05  # of one core
QUIET_WINDOWS = 2  # of 1 s each


def _list_latency(api_url: str, api_key: str | None, requests: int) -> tuple[dict, int, int]:
    """GET /api/v1/services `requests` times, one after the other: timings, items and bytes of the last answer."""
    times = []
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=api_url, timeout=30, trust_env=False, headers=headers) as client:
        for _ in range(3):  # warm-up: connection, first serialization
            client.get("/api/v1/services").raise_for_status()
        for _ in range(requests):
            started = time.monotonic()
            answer = client.get("/api/v1/services")
            times.append(time.monotonic() - started)
            answer.raise_for_status()
    body = answer.json()
    items = body if isinstance(body, list) else next((v for v in body.values() if isinstance(v, list)), [])
    return summary(times), len(items), len(answer.content)


def _cancel_jobs(fleet: Fleet, job_ids: list[str]) -> None:
    env = {**os.environ, **fleet.ctx.access.slurm_env}
    for start in range(0, len(job_ids), 200):
        subprocess.run(["scancel", *job_ids[start:start + 200]], env=env, capture_output=True, timeout=120, check=False)


def _settle(fleet: Fleet, timeout: float) -> dict:
    ctx = fleet.ctx
    old = operator_process()
    if old is None:
        return {"error": "the stack's operator is not running"}
    names = list(fleet.names)
    job_ids = [ctx.watch.get(n).status.get("jobId") for n in names if ctx.watch.get(n)]
    job_ids = [j for j in job_ids if j]
    say(f"B4: stopping the operator (pid {old.pid}), cancelling its {len(job_ids)} fleet jobs in Slurm meanwhile")
    stopped_at = time.monotonic()
    stop_process(old.pid)
    _cancel_jobs(fleet, job_ids)
    up = subprocess.run([sys.executable, "-m", "aifactory", "dev", "up"], capture_output=True, text=True,
                        timeout=600, check=False)
    if up.returncode != 0:
        return {"error": f"`aifactory dev up` failed: {up.stderr.strip()[-500:]}"}
    new = operator_process()
    if new is None:
        return {"error": "`aifactory dev up` did not start the operator"}
    started = new.started_monotonic()
    say(f"  operator restarted (pid {new.pid}), down for {started - stopped_at:.1f}s; waiting for it to settle")
    wanted = set(names)
    observed = ctx.watch.wait(
        lambda s: all(s[n].status.get("phase") == "cancelled" for n in wanted if n in s),
        max(1.0, started + timeout - time.monotonic()), f"{len(wanted)} services to show their cancelled job")
    observed_at = max((ctx.watch.get(n).phase_at.get("cancelled", 0.0) for n in names), default=started)
    result = {"objects": len(names), "restarted_pid": new.pid, "down_seconds": started - stopped_at,
              "all_observed": observed, "observed_seconds": observed_at - started if observed else None}
    if not observed:
        left = sum(1 for n in names if ctx.watch.get(n).status.get("phase") != "cancelled")
        result["not_observed"] = left
    quiet_run, quiet_from, shares = 0, None, []
    while time.monotonic() < started + timeout:
        window_start = time.monotonic()
        share = new.cpu_share(1.0)
        shares.append(round(share, 3))
        if share < QUIET_SHARE:
            quiet_from = quiet_from if quiet_run else window_start
            quiet_run += 1
            if quiet_run >= QUIET_WINDOWS:
                break
        else:
            quiet_run, quiet_from = 0, None
    result["cpu_share_per_second"] = shares
    result["quiet"] = quiet_run >= QUIET_WINDOWS
    result["quiet_seconds"] = quiet_from - started if result["quiet"] else None
    result["settle_seconds"] = (max(observed_at, quiet_from) - started) if observed and result["quiet"] else None
    result["rss_mb_after"] = new.rss_mb()
    return result


def run(fleet: Fleet) -> Benchmark:
    ctx, sizes = fleet.ctx, fleet.ctx.sizes
    n = sizes.scale
    b4 = Benchmark("B4", f"Scale: {n} AIService objects",
                   config={"N": n, "list requests": sizes.list_requests,
                           "settle": f"all statuses show the change + CPU < {QUIET_SHARE:.0%} of a core for "
                                     f"{QUIET_WINDOWS} s, timeout {sizes.settle_timeout:g} s"})
    b4.notes.append(f"The {n} objects are live services of cluster {CLUSTER} (B3's, topped up): "
                    f"{fleet.how_pending}.")
    say(f"B4: growing to {n} live services")
    grown = fleet.grow_to(n)
    say(f"  {grown['with_job_id']}/{n} have a job id after {grown['until_all_job_ids_seconds']:.1f}s")
    window = fleet.count_window(sizes.window_intervals)
    proc = operator_process()
    rss = proc.rss_mb() if proc else None
    peak = proc.rss_mb("VmHWM") if proc else None
    b4.raw = {"creation": grown, "window": window, "rss_mb": rss, "peak_rss_mb": peak}
    b4.figures.append(Figure.checked(
        f"operator resident memory, {grown['live']} objects", rss, "MB",
        f"VmRSS of the operator's pid; peak (VmHWM) {fmt(peak, 'MB')}", "<=", 300))
    b4.figures.append(Figure(
        f"slurmrestd requests per poll interval, N={window['live']}", window["per_interval"], "count",
        f"{window['requests']} in {window['window_seconds']:.1f} s ({window['per_minute']:.1f}/min)"))
    b4.figures.append(Figure(
        f"time for {grown['added']} new objects to all get job ids", grown["until_all_job_ids_seconds"], "s",
        f"{grown['with_job_id']}/{grown['live']} with a job id; "
        f"{sum(grown['slurmrestd_requests'].values())} slurmrestd requests meanwhile"))
    if not grown["complete"]:
        b4.notes.append(f"Only {grown['with_job_id']} of {n} objects had a job id when measuring began.")

    why_not = api_answers(ctx.access.api_url)
    if why_not is None:
        say(f"B4: GET /api/v1/services x{sizes.list_requests}")
        try:
            lat, items, size = _list_latency(ctx.access.api_url, ctx.access.api_key, sizes.list_requests)
        except httpx.HTTPError as exc:
            why_not = f"GET /api/v1/services failed: {exc}"
        else:
            b4.raw["list"] = {"latency": lat, "items": items, "bytes": size}
            raw = (f"p95 {fmt(_ms(lat['p95']), 'ms')}; {lat['n']} sequential requests; {items} services listed, "
                   f"{size / 1024:.0f} KiB")
            b4.figures.append(Figure.checked("GET /api/v1/services p50", _ms(lat["p50"]), "ms", raw, "<=", 50))
            b4.figures.append(Figure("GET /api/v1/services p95", _ms(lat["p95"]), "ms", raw))
    if why_not is not None:
        b4.figures.append(Figure("GET /api/v1/services p50", None, "ms", why_not, "<= 50.0 ms", None))

    settle = _settle(fleet, sizes.settle_timeout)
    b4.raw["restart"] = settle
    if "error" in settle:
        b4.figures.append(Figure("restarted operator settles", None, "s", settle["error"], "<= 30.0 s", None))
    else:
        raw = (f"all {settle['objects']} statuses updated after {fmt(settle['observed_seconds'], 's')}, CPU quiet "
               f"after {fmt(settle['quiet_seconds'], 's')} (from the new process's start); operator down "
               f"{settle['down_seconds']:.1f} s")
        if not settle["all_observed"]:
            raw += f"; {settle.get('not_observed')} statuses not updated within the timeout"
        settled = Figure.checked("restarted operator settles", settle["settle_seconds"], "s", raw, "<=", 30)
        if settle["settle_seconds"] is None:  # it did not settle within the timeout: that is a miss
            settled.met = False
            settled.raw = f"not settled within {sizes.settle_timeout:g} s; " + raw
        b4.figures.append(settled)
        b4.figures.append(Figure.checked("operator resident memory after the restart", settle["rss_mb_after"], "MB",
                                         f"VmRSS of pid {settle['restarted_pid']} once settled", "<=", 300))
    return b4


def _ms(seconds: float | None) -> float | None:
    return seconds * 1000 if seconds is not None else None
