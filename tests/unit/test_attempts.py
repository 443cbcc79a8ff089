"""The failure taxonomy, attempts and restart decisions: pure functions of a finished job and its last log lines."""

import pytest

from aifactory.attempts import (
    ATTEMPTS_KEPT,
    Failure,
    failure_info,
    failure_of,
    log_excerpt,
    observed,
    parse_attempts,
    restart_after,
    started,
)
from aifactory.models import RestartSpec
from aifactory.slurm.jobs import SlurmJob

# What slurmstepd of the local Slurm 22.05 wrote into a job's output when JobAcctGatherParams=OverMemoryKill
# killed it (the job then read FAILED, reason JobLaunchFailure, signal 9).
OVER_MEMORY_KILL = """\
slurmstepd-vm: error: StepId=12.batch exceeded memory limit (151691264 > 52428800), being killed
slurmstepd-vm: error: Exceeded job memory limit
slurmstepd-vm: error: *** JOB 12 ON vm CANCELLED AT 2026-11-29T21:37:54 ***
"""
CGROUP_OOM = ("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=7.batch. Some of your processes may have "
              "been killed by the cgroup out-of-memory handler.\n")
TORCH_CUDA_OOM = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                  "capacity of 79.15 GiB of which 1.2 GiB is free.\n")
PULL_FAILED = ("FATAL:   While making image from oci registry: failed to get checksum for docker://nope/x:1: "
               "reading manifest 1 in docker.io/nope/x: requested access to the resource is denied\n"
               "aifactory: could not pull the image (apptainer pull docker://nope/x:1 exited with 255)\n")


def job(state, **kw):
    return SlurmJob(job_id="12", state=state, batch_host="vm", **kw)


@pytest.mark.parametrize("slurm_job, log, reason, words", [
    (job("OUT_OF_MEMORY", exit_code=0, signal=9), "", "OutOfMemory", "OUT_OF_MEMORY"),
    (job("FAILED", reason="JobLaunchFailure", exit_code=0, signal=9), OVER_MEMORY_KILL, "OutOfMemory",
     "exceeded memory limit"),
    (job("FAILED", exit_code=0, signal=9), CGROUP_OOM, "OutOfMemory", "oom-kill"),
    (job("FAILED", exit_code=1), TORCH_CUDA_OOM, "CudaOutOfMemory", "CUDA out of memory"),
    (job("TIMEOUT", exit_code=0, signal=15), "still serving\n", "Timeout", "time limit"),
    (job("NODE_FAIL"), "", "NodeFail", "node failed"),
    (job("BOOT_FAIL"), "", "NodeFail", "BOOT_FAIL"),
    (job("PREEMPTED"), "", "Preempted", "preempted"),
    (job("FAILED", exit_code=1, comment="aifactory uid=u stage=building"), PULL_FAILED, "ImagePullFailed",
     "could not pull the image"),
    (job("FAILED", exit_code=1, comment="aifactory uid=u stage=building"), "", "ImagePullFailed", "image"),
    (job("FAILED", exit_code=3, reason="NonZeroExitCode"), "bye\n", "ExitCode", "exit code 3"),
    (job("FAILED", exit_code=0, signal=11), "", "ExitCode", "signal 11"),
    (job("CANCELLED", signal=15), "*** JOB 12 ON vm CANCELLED AT x ***\n", "Cancelled", "cancelled"),
    (job("RUNNING", vanished=True), "", "JobLost", "no longer knows"),
])
def test_failure_taxonomy(slurm_job, log, reason, words):
    failure = failure_of(slurm_job, log)
    assert failure is not None and failure.reason == reason
    assert words in failure.message


def test_a_completed_job_is_no_failure_even_when_its_log_mentions_memory():
    assert failure_of(job("COMPLETED", exit_code=0), "warning: oom_kill_disable not set\n") is None


def test_failure_info_has_kservres_shape_and_the_last_lines():
    log = "".join(f"line {i}\n" for i in range(100))
    info = failure_info(Failure("ExitCode", "The job failed with exit code 3"), job("FAILED", exit_code=3), log,
                        "2026-11-29T21:00:00Z").wire()
    assert {k: info[k] for k in ("reason", "message", "exitCode", "time", "jobId")} == {
        "reason": "ExitCode", "message": "The job failed with exit code 3", "exitCode": 3,
        "time": "2026-11-29T21:00:00Z", "jobId": "12"}
    assert info["logTail"].splitlines() == [f"line {i}" for i in range(80, 100)]
    killed = failure_info(Failure("OutOfMemory", "m"), job("FAILED", exit_code=0, signal=9), None, "t").wire()
    assert killed["exitCode"] == 137 and "logTail" not in killed
    assert len(log_excerpt("x" * 10_000)) == 4000


def test_attempts_are_numbered_on_and_record_what_slurm_said():
    attempts = started([], "11", "default", "Created")
    attempts = started(attempts, "11", "default", "Created")  # adopted again: the same attempt
    assert [(a.number, a.job_id) for a in attempts] == [(1, "11")]
    running = SlurmJob(job_id="11", state="RUNNING", batch_host="vm", start_time=1795987471)
    attempts = observed(attempts, running)
    assert (attempts[0].node, attempts[0].start_time, attempts[0].end_state) == ("vm", "2026-11-29T21:24:31Z", None)
    ended = SlurmJob(job_id="11", state="FAILED", batch_host="vm", start_time=1795987471, end_time=1795987500,
                     exit_code=3)
    attempts = observed(attempts, ended, "ExitCode")
    assert (attempts[0].end_state, attempts[0].exit_code, attempts[0].reason) == ("FAILED", 3, "ExitCode")
    assert attempts[0].end_time == "2026-11-29T21:25:00Z"
    attempts = started(attempts, "15", "default", "Restart")
    assert [(a.number, a.started_by) for a in attempts] == [(1, "Created"), (2, "Restart")]
    # Queued: start_time is Slurm's estimate, not a start.
    queued = observed(attempts, SlurmJob(job_id="15", state="PENDING", start_time=1795990000))
    assert queued[1].start_time is None


def test_only_the_newest_attempts_are_kept_and_numbers_go_on():
    attempts = []
    for i in range(ATTEMPTS_KEPT + 5):
        attempts = started(attempts, str(100 + i), "default", "Restart")
    assert len(attempts) == ATTEMPTS_KEPT
    assert attempts[0].number == 6 and attempts[-1].number == ATTEMPTS_KEPT + 5
    wire = [a.wire() for a in attempts]
    assert parse_attempts(wire + [{"bogus": True}]) == attempts


def test_on_failure_restarts_with_a_doubling_backoff_until_the_maximum():
    policy = RestartSpec(policy="OnFailure", max_restarts=2, backoff_seconds=10)
    failure = Failure("ExitCode", "exit code 3")
    first = restart_after(failure, policy, 0, 1000.0)
    assert (first.restart, first.at, first.counted) == (True, 1010.0, True)
    assert "restart 1 of 2" in first.message
    second = restart_after(failure, policy, 1, 1000.0)
    assert (second.restart, second.at) == (True, 1020.0)
    third = restart_after(failure, policy, 2, 1000.0)
    assert not third.restart and "2 of 2" in third.message
    capped = restart_after(failure, RestartSpec(policy="OnFailure", max_restarts=50, backoff_seconds=30), 20, 0)
    assert capped.at == 600


def test_never_means_never_but_node_failures_and_preemptions_are_requeued():
    never = RestartSpec()
    assert not restart_after(Failure("OutOfMemory", "m"), never, 0, 0).restart
    for reason in ("NodeFail", "Preempted"):
        requeue = restart_after(Failure(reason, "m"), never, 0, 5.0)
        assert (requeue.restart, requeue.at, requeue.counted) == (True, 5.0, False)
    # A cancel is somebody's decision: not restarted, even with OnFailure.
    assert not restart_after(Failure("Cancelled", "m"), RestartSpec(policy="OnFailure"), 0, 0).restart
