"""Rollover, the operator's side: submit a successor, switch the endpoint to it once healthy, drain and cancel the
old job; the same on a spec change. The decisions are aifactory.rollover's; these functions read, call and write.

Everything is kept in the status (successor, draining, attempts), so an operator restart picks up where it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf
from pydantic import ValidationError

from aifactory import rollover
from aifactory.attempts import (
    LOG_LINES,
    STARTUP_TIMEOUT,
    Failure,
    failure_info,
    failure_of,
    observed,
    parse_attempts,
    started,
)
from aifactory.lifecycle import now_rfc3339, observe, rfc3339, scheduled_condition, startup_overdue
from aifactory.models import AIServiceSpec, Attempt, Condition, DrainingJob, Phase, Recipe, Successor
from aifactory.operator import aiservice as svc
from aifactory.operator.clusters import Cluster, ClusterNotReady, registry
from aifactory.recipes import RecipeNotFound
from aifactory.slurm.errors import SlurmError
from aifactory.slurm.jobs import SlurmJob

log = logging.getLogger(__name__)


@dataclass
class Rolled:
    """What a tick of rollover did: wrote the status itself (done), or has fields and conditions to add to it."""

    done: bool = False
    fields: dict[str, Any] = field(default_factory=dict)
    conditions: list[Condition] = field(default_factory=list)
    attempts: list[Attempt] | None = None


def _parsed(spec: Any) -> AIServiceSpec | None:
    try:
        return AIServiceSpec.model_validate(dict(spec))
    except ValidationError:
        return None


def _recipe(name: str) -> Recipe | None:
    try:
        return svc.catalog.get(name)
    except RecipeNotFound:
        return None


def successor_of(status: Any) -> Successor | None:
    try:
        return Successor.model_validate(status["successor"]) if status.get("successor") else None
    except ValidationError:
        return None


def draining_of(status: Any) -> list[DrainingJob]:
    out = []
    for item in status.get("draining") or ():
        try:
            out.append(DrainingJob.model_validate(item))
        except ValidationError:
            continue
    return out


def cluster_of(status: Any, job_id: str | None, default: str) -> str:
    """The SlurmCluster a job of the service runs on (its attempt says; a spec change may have moved the service)."""
    for attempt in status.get("attempts") or ():
        if attempt.get("jobId") == job_id and attempt.get("cluster"):
            return attempt["cluster"]
    return default


async def _tail(cluster: Cluster, job: SlurmJob) -> str | None:
    try:
        return await cluster.bridge.log_tail(job, LOG_LINES)
    except SlurmError as exc:
        log.warning("could not read the output of job %s: %s", job.job_id, exc)
        return None


def _ended_by_us(old: SlurmJob | None, job_id: str, now: float) -> SlurmJob:
    """The job as aifactory ended it (cancelled now), or as it ended on its own before that."""
    if old is not None and (old.finished or old.vanished):
        return old
    return SlurmJob(job_id=job_id, state="CANCELLED", batch_host=old.batch_host if old else "",
                    start_time=old.start_time if old else None, end_time=int(now))


async def _drain(body: Any, draining: list[DrainingJob], default_cluster: str, attempts: list[Attempt],
                 now: float) -> tuple[list[DrainingJob], list[Attempt]]:
    """Cancel the drained jobs whose grace is over; those that could not be cancelled stay for the next tick."""
    remaining = []
    for drained in draining:
        until = svc._parse_time(drained.until)
        if until is not None and now < until:
            remaining.append(drained)
            continue
        try:
            cluster = registry.get(drained.cluster or default_cluster)
            await cluster.bridge.cancel(drained.job_id)
        except (ClusterNotReady, SlurmError) as exc:
            log.warning("could not cancel drained job %s: %s", drained.job_id, exc)
            remaining.append(drained)
            continue
        attempts = observed(attempts, _ended_by_us(cluster.poller.job(drained.job_id), drained.job_id, now),
                            "RolledOver")
        cluster.poller.wake()
        kopf.info(body, reason="Drained", message=f"Cancelled job {drained.job_id}: its drain period after the "
                                                  "rollover is over")
    return remaining, attempts


async def tick(body: Any, spec: Any, meta: Any, status: Any, uid: str, patch: kopf.Patch, tenants: Any,
               cluster: Cluster, job: SlurmJob, recipe: Recipe | None, now: float) -> Rolled:
    """One look at the service's rollover: drained jobs, the successor (switch to it when healthy; it becomes the
    current job when the old one ended first), and a new successor when the current job nears its end."""
    parsed = _parsed(spec)
    if parsed is None:
        return Rolled()
    out = Rolled()
    attempts = parse_attempts(status.get("attempts"))
    draining = draining_of(status)
    remaining, attempts = await _drain(body, draining, parsed.cluster, attempts, now)
    if len(remaining) != len(draining):
        out.fields["draining"] = [d.wire() for d in remaining] or None
    health_path = recipe.health_path if recipe else "/health"

    successor = successor_of(status)
    succ_cluster: Cluster | None = None
    succ_job: SlurmJob | None = None
    succ_healthy = False
    if successor is not None:
        try:
            succ_cluster = registry.get(successor.cluster or parsed.cluster)
            succ_job = succ_cluster.poller.job(successor.job_id)
        except ClusterNotReady:
            succ_cluster = None
    if succ_cluster is not None and succ_job is not None:
        failure = None
        if succ_job.finished or succ_job.vanished:
            tail = await _tail(succ_cluster, succ_job) if succ_job.state != "COMPLETED" else None
            failure = failure_of(succ_job, tail) or Failure("ExitCode", f"The job ended ({succ_job.state})")
        else:
            endpoint, succ_healthy = await svc._reach(succ_cluster, succ_job, health_path, probe=True)
            grace = recipe.startup_grace_seconds if recipe else None
            if not succ_healthy and startup_overdue(Phase.starting, succ_job, grace, now):
                await _cancel_quietly(succ_cluster, succ_job.job_id)
                tail = await _tail(succ_cluster, succ_job)
                failure = Failure(STARTUP_TIMEOUT, f"Not healthy within the recipe's start-up grace of {grace}s")
            elif succ_healthy and not (job.finished or job.vanished):
                attempts = observed(attempts, succ_job)
                await _switch(body, meta, status, patch, job, successor, succ_cluster, succ_job, endpoint,
                        [*remaining, DrainingJob(job_id=job.job_id, cluster=cluster_of(status, job.job_id,
                                                 parsed.cluster), until=rollover.drain_until(parsed, now))],
                        attempts, parsed, recipe, now)
                return Rolled(done=True)
        if failure is not None:
            attempts = observed(attempts, _ended_by_us(succ_job, succ_job.job_id, now) if failure.reason ==
                                STARTUP_TIMEOUT else succ_job, failure.reason)
            message = f"Successor job {succ_job.job_id} ended before it was healthy: {failure.message}"
            out.fields.update(successor=None, nextAttemptTime=rfc3339(now + rollover.RETRY_AFTER_FAILED_SUCCESSOR),
                              lastFailure=failure_info(failure, succ_job, tail, now_rfc3339()).wire())
            kopf.warn(body, reason="RolloverFailed", message=message)
            successor = succ_job = None

    if successor is not None and succ_job is not None and (job.finished or job.vanished):
        await _promote(body, meta, status, patch, cluster, job, successor, succ_cluster, succ_job, remaining,
                       attempts)
        return Rolled(done=True)

    retry_at = svc._parse_time(status.get("nextAttemptTime")) if "nextAttemptTime" not in out.fields else None
    serving = status.get("phase") == Phase.running.value
    if (successor is None and serving and rollover.successor_due(job, parsed, recipe, now)
            and (retry_at is None or now >= retry_at)):
        try:
            done = await svc._submit(spec, meta, uid, tenants, svc._known_jobs(status))
        except svc.NotSubmitted as exc:
            out.fields["nextAttemptTime"] = rfc3339(now + rollover.RETRY_AFTER_FAILED_SUCCESSOR)
            kopf.warn(body, reason="RolloverFailed", message=f"Could not submit a successor: {exc.message}")
        else:
            successor = Successor(job_id=done.job_id, cluster=done.cluster_name, reason=rollover.WALLTIME,
                                  submitted_at=now_rfc3339(), generation=meta.get("generation"))
            attempts = started(attempts, done.job_id, done.cluster_name, "Rollover")
            succ_job = done.cluster.poller.job(done.job_id)
            out.fields.update(successor=successor.wire(), nextAttemptTime=None)
            kopf.info(body, reason="RolloverStarted", message=f"{done.verb} successor job {done.job_id}: job "
                                                             f"{job.job_id} reaches its time limit at "
                                                             f"{rfc3339(job.end_time)}")

    out.attempts = attempts
    previous = {c.get("type"): c for c in status.get("conditions") or ()}.get("RollingOver") or {}
    if successor is None and previous.get("reason") == "PredecessorEnded" and status.get("phase") != "running":
        rolling = Condition.model_validate(previous)  # the late successor is not serving yet
    else:
        rolling = rollover.rolling_condition(successor.job_id if successor else None,
                                             successor.reason if successor else "", succ_job, previous.get("message"))
    out.conditions = [rollover.walltime_condition(job, parsed, recipe, succ_job, succ_healthy, now), rolling]
    return out


def settled(conditions: list[Condition], phase: Phase) -> list[Condition]:
    """Once the late successor serves, RollingOver says that it is over."""
    return [rollover.rolling_condition(None, "", None, c.message)
            if c.type == "RollingOver" and c.reason == "PredecessorEnded" and phase is Phase.running else c
            for c in conditions]


async def _switch(body: Any, meta: Any, status: Any, patch: kopf.Patch, old: SlurmJob, successor: Successor,
                  cluster: Cluster, job: SlurmJob, endpoint: str | None, draining: list[DrainingJob],
                  attempts: list[Attempt], spec: AIServiceSpec, recipe: Recipe | None, now: float) -> None:
    """The successor is healthy: it becomes the current job (status.endpoint moves to it), the old one drains."""
    why = "walltime" if successor.reason == rollover.WALLTIME else "spec change"
    message = f"Rolled over from job {old.job_id} to job {job.job_id} ({why})"
    seen = observe(job, True)
    conditions = [scheduled_condition(job), rollover.rolling_condition(None, "", None, message),
                  rollover.walltime_condition(job, spec, recipe, None, False, now)]
    # The gateway routes by the models a service serves: the new spec's job may serve others.
    served = ({"models": await svc._served_models(cluster, endpoint)}
              if endpoint and recipe and recipe.openai_api else {})
    patch.status.update(svc._status(
        Phase.running, "RolledOver", message, meta, dict(status), cluster, conditions, jobId=job.job_id,
        slurmState=seen.slurm_state, node=seen.node, endpoint=endpoint, pendingReason=None, expectedStart=None,
        successor=None, draining=[d.wire() for d in draining], rollovers=(status.get("rollovers") or 0) + 1,
        attempts=svc._attempts_wire(attempts), nextAttemptTime=None, restartCount=None, **served))
    kopf.info(body, reason="RolledOver", message=message)


async def _promote(body: Any, meta: Any, status: Any, patch: kopf.Patch, cluster: Cluster, old: SlurmJob,
                   successor: Successor, succ_cluster: Cluster, job: SlurmJob, draining: list[DrainingJob],
                   attempts: list[Attempt]) -> None:
    """The current job ended before its successor was healthy: the successor becomes the current job as it is
    (queued or starting), and the service is not ready until it is healthy."""
    tail = await _tail(cluster, old) if old.state != "COMPLETED" else None
    failure = failure_of(old, tail)
    attempts = observed(attempts, old, failure.reason if failure else "Completed")
    seen = observe(job, False)
    message = (f"Job {old.job_id} ended ({old.state}) before its successor {job.job_id} was healthy; "
               f"the successor is {rollover.describe(job)}")
    conditions = [scheduled_condition(job),
                  Condition(type="RollingOver", status="True", reason="PredecessorEnded", message=message)]
    patch.status.update(svc._status(
        seen.phase, "SuccessorNotReady", message, meta, dict(status), succ_cluster, conditions, jobId=job.job_id,
        slurmState=seen.slurm_state, node=seen.node, endpoint=None, pendingReason=seen.pending_reason,
        expectedStart=rfc3339(seen.expected_start), successor=None,
        draining=[d.wire() for d in draining] or None, attempts=svc._attempts_wire(attempts)))
    kopf.warn(body, reason="RolloverLate", message=message)


async def _cancel_quietly(cluster: Cluster, job_id: str) -> None:
    try:
        await cluster.bridge.cancel(job_id)
    except SlurmError as exc:
        log.warning("could not cancel job %s: %s", job_id, exc)
    cluster.poller.wake()


async def start_on_change(body: Any, spec: Any, meta: Any, status: Any, uid: str, patch: kopf.Patch,
                          tenants: Any) -> bool:
    """A changed spec of a running service that rolls over: submit the new spec's job as the successor; the old
    job serves until it is healthy. False when the spec asks for a replace (or nothing serves to keep)."""
    parsed = _parsed(spec)
    if parsed is None or status.get("phase") != Phase.running.value or not status.get("jobId"):
        return False
    if not rollover.rolls_over_on_change(parsed, _recipe(parsed.recipe)):
        return False
    attempts = parse_attempts(status.get("attempts"))
    old = successor_of(status)
    if old is not None:
        # A successor of an older spec (or of the walltime) is superseded by one of this spec.
        try:
            old_cluster = registry.get(old.cluster or parsed.cluster)
        except ClusterNotReady as exc:
            raise kopf.TemporaryError(f"cannot cancel the superseded successor {old.job_id}: {exc}", delay=5)
        await _cancel_quietly(old_cluster, old.job_id)
        attempts = observed(attempts, _ended_by_us(old_cluster.poller.job(old.job_id), old.job_id,
                                                   datetime.now().timestamp()), "Superseded")
    try:
        done = await svc._submit(spec, meta, uid, tenants, svc._known_jobs(status))
    except svc.NotSubmitted as exc:
        if exc.delay is not None:
            raise kopf.TemporaryError(exc.message, delay=exc.delay) from exc
        message = f"The changed spec cannot run ({exc.message}); job {status['jobId']} keeps serving the previous one"
        conditions = [c for c in status.get("conditions") or () if c.get("type") != "RollingOver"]
        conditions.append({**Condition(type="RollingOver", status="False", reason=exc.reason, message=message).wire(),
                           "lastTransitionTime": now_rfc3339(), "observedGeneration": meta.get("generation")})
        patch.status.update(conditions=conditions, successor=None, attempts=svc._attempts_wire(attempts))
        kopf.warn(body, reason=exc.reason, message=message)
        return True
    successor = Successor(job_id=done.job_id, cluster=done.cluster_name, reason=rollover.SPEC_CHANGED,
                          submitted_at=now_rfc3339(), generation=meta.get("generation"))
    attempts = started(attempts, done.job_id, done.cluster_name, "SpecChanged")
    patch.status.update(successor=successor.wire(), attempts=svc._attempts_wire(attempts), restartCount=None,
                        nextAttemptTime=None, observedGeneration=meta.get("generation"))
    kopf.info(body, reason="RolloverStarted", message=f"{done.verb} job {done.job_id} for the changed spec; job "
                                                     f"{status['jobId']} serves until it is healthy")
    return True


async def cancel_others(spec: Any, status: Any) -> None:
    """Cancel the service's jobs besides the current one (its successor and draining jobs): on delete, and before
    a replace. Raises kopf.TemporaryError while one cannot be cancelled."""
    default = spec.get("cluster") or "default"
    others = [(d.job_id, d.cluster) for d in draining_of(status)]
    successor = successor_of(status)
    if successor is not None:
        others.append((successor.job_id, successor.cluster))
    for job_id, name in others:
        try:
            cluster = registry.get(name or default)
        except ClusterNotReady as exc:
            if not await svc._slurmcluster_exists(name or default):
                log.warning("SlurmCluster %s is gone: job %s could not be cancelled", name or default, job_id)
                continue  # nothing can cancel it any more
            raise kopf.TemporaryError(f"cannot cancel job {job_id}: {exc}", delay=5) from exc
        try:
            await cluster.bridge.cancel(job_id)
        except SlurmError as exc:
            raise kopf.TemporaryError(f"cannot cancel job {job_id}: {exc}", delay=5) from exc
        cluster.poller.wake()
