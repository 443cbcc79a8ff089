"""Attempts, failures and restarts: the pure part of what happens when a service's job ends.

Each Slurm job of a service is an attempt. When one ends, `failure_of` names why in the words of the failure
taxonomy (from Slurm's end state and the job's last log lines), `ended` records it among the service's
attempts, and `restart_after` decides whether (and when) a new attempt starts. No I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aifactory.lifecycle import rfc3339
from aifactory.models import Attempt, FailureInfo, RestartPolicy, RestartSpec
from aifactory.slurm.jobs import SlurmJob

ATTEMPTS_KEPT = 10  # status.attempts holds the newest ones; their output files stay on the cluster
LOG_LINES = 20  # last log lines kept with a failure
LOG_CHARS = 4000  # and at most this much of them (a line may be long)

# The failure taxonomy (status.lastFailure.reason, status.attempts[].reason).
OUT_OF_MEMORY = "OutOfMemory"
CUDA_OUT_OF_MEMORY = "CudaOutOfMemory"
TIMEOUT = "Timeout"
NODE_FAIL = "NodeFail"
PREEMPTED = "Preempted"
IMAGE_PULL_FAILED = "ImagePullFailed"
STARTUP_TIMEOUT = "StartupTimeout"
EXIT_CODE = "ExitCode"
CANCELLED = "Cancelled"
JOB_LOST = "JobLost"
# Failures that are the cluster's, not the service's: requeued whatever the restart policy, never counted.
REQUEUED = frozenset({NODE_FAIL, PREEMPTED})

# What slurmstepd writes into the job's output when it kills a step over its memory: with
# JobAcctGatherParams=OverMemoryKill ("exceeded memory limit", "Exceeded job memory limit") and with cgroups
# ("Detected N oom-kill event(s)" ... "out-of-memory handler"). The job's end state is then FAILED on some
# Slurm versions, OUT_OF_MEMORY on others.
_HOST_OOM = re.compile(r"exceeded (job )?memory limit|oom[-_ ]kill|out-of-memory handler|Out of memory: Kill",
                       re.IGNORECASE)
# PyTorch, CUDA runtime, cuBLAS and vLLM's own words for a GPU out of memory.
_CUDA_OOM = re.compile(r"CUDA out of memory|CUDA error: out of memory|torch\.(cuda\.)?OutOfMemoryError|"
                       r"cudaErrorMemoryAllocation|CUBLAS_STATUS_ALLOC_FAILED|No available memory for the cache "
                       r"blocks", re.IGNORECASE)
# The job script's words when the image pull or build fails (aifactory.jobscript).
_PULL_FAILED = re.compile(r"aifactory: could not (pull|build) the image.*")


@dataclass(frozen=True)
class Failure:
    reason: str  # one word of the taxonomy
    message: str  # what happened, in Slurm's or the log's words


def failure_of(job: SlurmJob, log_tail: str | None) -> Failure | None:
    """Why a finished job failed, or None when it ended as a job may (COMPLETED)."""
    state, log = job.state, log_tail or ""
    why = f" (Slurm reason: {job.reason})" if job.reason and job.reason != "None" else ""
    if job.vanished and not job.finished:
        return Failure(JOB_LOST, f"Slurm no longer knows job {job.job_id}; its end state is unknown")
    if state == "OUT_OF_MEMORY":
        return Failure(OUT_OF_MEMORY, f"The job ran out of memory: Slurm ended it OUT_OF_MEMORY{why}")
    cuda = _first_match(_CUDA_OOM, log)
    if cuda:
        return Failure(CUDA_OUT_OF_MEMORY, f"The GPU ran out of memory: {cuda}")
    host = _first_match(_HOST_OOM, log)
    if host and state not in ("COMPLETED", "TIMEOUT"):
        return Failure(OUT_OF_MEMORY, f"The job ran out of memory: {host}")
    if state in ("TIMEOUT", "DEADLINE"):
        return Failure(TIMEOUT, f"The job reached its time limit (Slurm: {state}){why}")
    if state in ("NODE_FAIL", "BOOT_FAIL"):
        return Failure(NODE_FAIL, f"The node failed (Slurm: {state}){why}")
    if state == "PREEMPTED":
        return Failure(PREEMPTED, f"The job was preempted by Slurm{why}")
    if state == "CANCELLED":
        return Failure(CANCELLED, f"The job was cancelled outside aifactory{why}")
    if state == "COMPLETED":
        return None
    pull = _first_match(_PULL_FAILED, log)
    if pull or job.tags.stage == "building":
        return Failure(IMAGE_PULL_FAILED, pull or f"The job failed while pulling or building its image{why}")
    how = f"exit code {job.exit_code}" if not job.signal else f"signal {job.signal}"
    return Failure(EXIT_CODE, f"The job failed with {how}{why}")


def _first_match(pattern: re.Pattern, text: str) -> str | None:
    """The first line that says it (the cause; later lines repeat it, like the step's cancel notice)."""
    return next((line.strip() for line in text.splitlines() if pattern.search(line)), None)


def log_excerpt(log_tail: str | None) -> str | None:
    """The last lines of a job's output as a failure keeps them: at most LOG_LINES lines and LOG_CHARS characters."""
    if not log_tail:
        return None
    text = "\n".join(log_tail.rstrip("\n").splitlines()[-LOG_LINES:])
    return text[-LOG_CHARS:]


# ---- attempts ------------------------------------------------------------------------------------------

def started(attempts: list[Attempt], job_id: str, cluster: str, why: str) -> list[Attempt]:
    """The attempts with a new one for a job just submitted (or adopted); numbered on from the last."""
    if any(a.job_id == job_id for a in attempts):
        return attempts
    number = max((a.number for a in attempts), default=0) + 1
    return [*attempts, Attempt(number=number, job_id=job_id, cluster=cluster, started_by=why)][-ATTEMPTS_KEPT:]


def observed(attempts: list[Attempt], job: SlurmJob, reason: str | None = None) -> list[Attempt]:
    """The attempts with what Slurm says of this job (node, start, end, end state, exit code) and, when it
    ended, why."""
    out = []
    for attempt in attempts:
        if attempt.job_id == job.job_id:
            ended = job.finished or job.vanished
            attempt = attempt.model_copy(update={
                "node": job.batch_host or job.nodes or attempt.node,
                "start_time": rfc3339(job.start_time) if not job.queued and job.start_time else attempt.start_time,
                "end_time": rfc3339(job.end_time) if ended and job.end_time else attempt.end_time,
                "end_state": job.state if job.finished else attempt.end_state,
                "exit_code": (job.exit_code if not job.signal else 128 + job.signal) if job.finished
                else attempt.exit_code,
                "reason": reason if reason is not None else attempt.reason,
            })
        out.append(attempt)
    return out


def failure_info(failure: Failure, job: SlurmJob, log_tail: str | None, when: str) -> FailureInfo:
    """KServe's lastFailureInfo shape (reason, message, exitCode, time) with the job and its last log lines."""
    exit_code = job.exit_code if not job.signal else 128 + job.signal
    return FailureInfo(reason=failure.reason, message=failure.message, exit_code=exit_code, time=when,
                       job_id=job.job_id, log_tail=log_excerpt(log_tail))


def parse_attempts(raw: list | None) -> list[Attempt]:
    out = []
    for item in raw or ():
        try:
            out.append(Attempt.model_validate(item))
        except ValueError:
            continue  # written by hand and wrong: not ours to keep
    return out


# ---- restarts ------------------------------------------------------------------------------------------

BACKOFF_CAP_SECONDS = 600


@dataclass(frozen=True)
class Restart:
    """What happens after a failure: a new attempt at `at` (epoch seconds), or none."""

    restart: bool
    at: float | None = None
    counted: bool = False  # whether it uses one of maxRestarts
    message: str = ""


def restart_after(failure: Failure, policy: RestartSpec, restarts: int, now: float) -> Restart:
    """Whether a failed service starts a new attempt: a node failure or preemption is requeued at once whatever
    the policy; with OnFailure any other failure but a cancel restarts, after a backoff that doubles each time,
    until maxRestarts are used."""
    if failure.reason in REQUEUED:
        return Restart(True, now, False, f"requeued after {failure.reason}")
    if failure.reason == CANCELLED or policy.policy is not RestartPolicy.on_failure:
        return Restart(False)
    if restarts >= policy.max_restarts:
        return Restart(False, message=f"no restart left ({restarts} of {policy.max_restarts} used)")
    delay = min(BACKOFF_CAP_SECONDS, policy.backoff_seconds * 2 ** restarts)
    return Restart(True, now + delay, True, f"restart {restarts + 1} of {policy.max_restarts} in {delay}s")
