"""Walltime rollover, decided without I/O: when a successor job is due, when the switch may happen, when a
drained job is cancelled, and what the conditions say about it.

A service's current job serves (status.jobId, status.endpoint). `lead` before its end (Slurm's end_time of a
running job: its start plus its time limit) a successor is submitted and queued like any job; once it is healthy,
the endpoint switches to it and the old job drains for a grace period, then it is cancelled. A changed spec
rolls over the same way. If the old job ends first, the successor becomes the current job as it is (queued or
starting): the service is not ready, and its Scheduled condition says why and when.
"""

from __future__ import annotations

from aifactory.lifecycle import rfc3339
from aifactory.models import AIServiceSpec, Condition, Recipe, RolloverSpec, UpdateStrategy
from aifactory.slurm.jobs import SlurmJob

WALLTIME = "Walltime"
SPEC_CHANGED = "SpecChanged"
RETRY_AFTER_FAILED_SUCCESSOR = 60  # seconds before another successor is tried after one failed


def settings(spec: AIServiceSpec) -> RolloverSpec:
    return spec.rollover or RolloverSpec()


def enabled(spec: AIServiceSpec, recipe: Recipe | None) -> bool:
    """Walltime rollover: as the spec says, else on for long-running recipes."""
    chosen = settings(spec).enabled
    if chosen is not None:
        return chosen
    return recipe.long_running if recipe is not None else False


def rolls_over_on_change(spec: AIServiceSpec, recipe: Recipe | None) -> bool:
    """Whether a changed spec starts the new job first (Rollover) or cancels the old one first (Replace)."""
    if spec.update_strategy is not None:
        return spec.update_strategy is UpdateStrategy.rollover
    return recipe.long_running if recipe is not None else False


def seconds_left(job: SlurmJob, now: float) -> float | None:
    """Until the running job reaches its time limit; None when it has none (or is not running)."""
    if job.state != "RUNNING" or not job.end_time or job.finished:
        return None
    return job.end_time - now


def lead_seconds(job: SlurmJob, spec: AIServiceSpec) -> float:
    """The lead time, at most half the job's time limit: a short job is not followed at once by its successor."""
    lead = settings(spec).lead_minutes * 60
    if job.start_time and job.end_time and job.end_time > job.start_time:
        return min(lead, (job.end_time - job.start_time) / 2)
    return lead


def successor_due(job: SlurmJob, spec: AIServiceSpec, recipe: Recipe | None, now: float) -> bool:
    """Time to submit a successor: rollover on, and the running job ends within the lead time."""
    left = seconds_left(job, now)
    return enabled(spec, recipe) and left is not None and left <= lead_seconds(job, spec)


def drain_until(spec: AIServiceSpec, now: float) -> str:
    return rfc3339(now + settings(spec).drain_seconds)


def walltime_condition(job: SlurmJob, spec: AIServiceSpec, recipe: Recipe | None, successor: SlurmJob | None,
                       successor_healthy: bool, now: float) -> Condition:
    """WalltimeExpiring: True from warnMinutes before the current job's end while no successor is healthy."""
    left = seconds_left(job, now)
    warn = settings(spec).warn_minutes * 60
    if left is None or left > warn or successor_healthy:
        why = "SuccessorReady" if successor_healthy else ("NoTimeLimit" if left is None else "NotYet")
        message = "" if left is None else f"Job {job.job_id} reaches its time limit at {rfc3339(job.end_time)}"
        return Condition(type="WalltimeExpiring", status="False", reason=why, message=message)
    ends = f"Job {job.job_id} reaches its time limit at {rfc3339(job.end_time)} (in {max(0, int(left)) // 60} min)"
    if not enabled(spec, recipe):
        return Condition(type="WalltimeExpiring", status="True", reason="RolloverOff",
                         message=f"{ends}; walltime rollover is off, so the service ends then")
    if successor is None:
        return Condition(type="WalltimeExpiring", status="True", reason="NoSuccessor",
                         message=f"{ends}; no successor job yet")
    return Condition(type="WalltimeExpiring", status="True", reason="SuccessorNotReady",
                     message=f"{ends}; successor job {successor.job_id} is not healthy yet: {describe(successor)}")


def describe(job: SlurmJob) -> str:
    """A job in a few words: queued (with Slurm's reason and estimate), starting, or its state."""
    if job.queued:
        reason = job.reason if job.reason and job.reason != "None" else "waiting to be scheduled"
        expected = f", expected start {rfc3339(job.expected_start)}" if job.expected_start else ""
        return f"queued ({reason}{expected})"
    if job.state == "RUNNING":
        node = job.batch_host or job.nodes
        return f"starting on {node}" if node else "starting"
    return job.state.lower()


def rolling_condition(successor_id: str | None, reason: str, job: SlurmJob | None, previous: str | None) -> Condition:
    """RollingOver: True while a successor is on its way (why, and where it is), False otherwise."""
    if successor_id is None:
        return Condition(type="RollingOver", status="False", reason="Idle", message=previous or "")
    where = describe(job) if job is not None else "submitted"
    return Condition(type="RollingOver", status="True", reason=reason,
                     message=f"Successor job {successor_id} ({'walltime' if reason == WALLTIME else 'spec change'}) "
                             f"is {where}")
