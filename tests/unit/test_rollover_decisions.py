"""Walltime rollover decisions: pure functions of the spec, the recipe and the jobs."""

from aifactory import rollover
from aifactory.models import AIServiceSpec, Recipe
from aifactory.slurm.jobs import SlurmJob

SERVING = Recipe(name="echo", category="testing", runtime="native", command=["serve"])
FINITE = SERVING.model_copy(update={"long_running": False})
NOW = 1_000_000.0


def running(ends_in: float, job_id: str = "7") -> SlurmJob:
    return SlurmJob(job_id=job_id, state="RUNNING", batch_host="vm", start_time=int(NOW - 60),
                    end_time=int(NOW + ends_in))


def spec(**kw) -> AIServiceSpec:
    return AIServiceSpec(recipe="testing/echo", **kw)


def test_rollover_is_on_for_long_running_recipes_and_off_for_finite_ones_unless_the_spec_says():
    assert rollover.enabled(spec(), SERVING) and not rollover.enabled(spec(), FINITE)
    assert not rollover.enabled(spec(rollover={"enabled": False}), SERVING)
    assert rollover.enabled(spec(rollover={"enabled": True}), FINITE)
    assert rollover.rolls_over_on_change(spec(), SERVING) and not rollover.rolls_over_on_change(spec(), FINITE)
    assert not rollover.rolls_over_on_change(spec(update_strategy="Replace"), SERVING)


def test_a_successor_is_due_within_the_lead_time_of_a_running_jobs_end():
    one_minute = spec(rollover={"leadMinutes": 1})
    assert not rollover.successor_due(running(61), one_minute, SERVING, NOW)
    assert rollover.successor_due(running(59), one_minute, SERVING, NOW)
    assert not rollover.successor_due(running(59), one_minute, FINITE, NOW)  # off for finite work
    queued = SlurmJob(job_id="7", state="PENDING", start_time=int(NOW + 10), end_time=int(NOW + 70))
    assert not rollover.successor_due(queued, one_minute, SERVING, NOW)  # an estimate, not a running job's end
    unlimited = SlurmJob(job_id="7", state="RUNNING", start_time=int(NOW - 60))
    assert not rollover.successor_due(unlimited, one_minute, SERVING, NOW)
    # A lead longer than half the time limit is cut to half: a 5-minute job is not followed at once.
    short = SlurmJob(job_id="7", state="RUNNING", start_time=int(NOW), end_time=int(NOW + 300))
    assert not rollover.successor_due(short, spec(), SERVING, NOW)
    assert rollover.successor_due(short, spec(), SERVING, NOW + 151)


def test_walltime_warning_only_close_to_the_end_and_without_a_healthy_successor():
    s = spec(rollover={"warnMinutes": 5})
    quiet = rollover.walltime_condition(running(600), s, SERVING, None, False, NOW)
    assert (quiet.status, quiet.reason) == ("False", "NotYet")
    alone = rollover.walltime_condition(running(240), s, SERVING, None, False, NOW)
    assert (alone.status, alone.reason) == ("True", "NoSuccessor") and "in 4 min" in alone.message
    queued = SlurmJob(job_id="9", state="PENDING", reason="Resources", start_time=int(NOW + 900))
    waiting = rollover.walltime_condition(running(240), s, SERVING, queued, False, NOW)
    assert waiting.reason == "SuccessorNotReady" and "job 9" in waiting.message and "Resources" in waiting.message
    assert "expected start" in waiting.message
    ready = rollover.walltime_condition(running(240), s, SERVING, running(3600, "9"), True, NOW)
    assert (ready.status, ready.reason) == ("False", "SuccessorReady")
    off = rollover.walltime_condition(running(240), spec(rollover={"enabled": False, "warnMinutes": 5}), SERVING,
                                      None, False, NOW)
    assert (off.status, off.reason) == ("True", "RolloverOff")


def test_rolling_condition_says_where_the_successor_is():
    queued = SlurmJob(job_id="9", state="PENDING", reason="Priority")
    cond = rollover.rolling_condition("9", rollover.WALLTIME, queued, None)
    assert (cond.status, cond.reason) == ("True", "Walltime") and "queued (Priority)" in cond.message
    idle = rollover.rolling_condition(None, "", None, "Rolled over from job 7 to job 9 (walltime)")
    assert (idle.status, idle.message) == ("False", "Rolled over from job 7 to job 9 (walltime)")


def test_drain_ends_after_the_grace():
    assert rollover.drain_until(spec(rollover={"drainSeconds": 10}), NOW) == "1970-01-12T13:46:50Z"
