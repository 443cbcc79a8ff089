"""The per-cluster job poller: what its cache promises the handlers."""

import asyncio

import pytest

from aifactory.slurm.bridge import JobsAnswer
from aifactory.slurm.jobs import SlurmJob
from aifactory.slurm.poller import JobPoller


class ScriptedCluster:
    """Answers GET /jobs from a list of prepared answers; `during` runs while an answer is on its way."""

    def __init__(self, answers, during=None):
        self.answers = list(answers)
        self.during = during
        self.asked: list[int | None] = []

    async def jobs(self, since=None, **kw):
        self.asked.append(since)
        if self.during:
            self.during()
        return self.answers.pop(0)


def job(job_id, state="RUNNING", uid="u1"):
    return SlurmJob(job_id=job_id, state=state, comment=f"aifactory uid={uid} stage=starting")


async def test_first_poll_is_a_full_list_and_later_ones_ask_since():
    cluster = ScriptedCluster([JobsAnswer([job("1")], None), JobsAnswer(None, None)])
    poller = JobPoller(cluster, interval=1)
    await poller.poll_once()
    await asyncio.wait_for(poller.listed(1), 1)
    await poller.poll_once()
    assert cluster.asked[0] is None and isinstance(cluster.asked[1], int)
    assert poller.job("1").state == "RUNNING"  # 304: nothing changed, cache kept


async def test_forgotten_jobs_keep_their_last_state_marked_vanished():
    cluster = ScriptedCluster([JobsAnswer([job("1", "COMPLETED"), job("2")], None), JobsAnswer([job("2")], None)])
    poller = JobPoller(cluster, interval=1)
    await poller.poll_once()
    await poller.poll_once()
    assert poller.job("1").vanished and poller.job("1").state == "COMPLETED"
    assert not poller.job("2").vanished


async def test_a_job_submitted_while_an_answer_is_on_its_way_is_not_forgotten():
    poller = JobPoller(None, interval=1)
    cluster = ScriptedCluster([JobsAnswer([job("1")], None), JobsAnswer([job("1")], None)],
                              during=lambda: poller.remember(job("2", "PENDING", uid="u2")))
    poller.bridge = cluster
    await poller.poll_once()
    assert not poller.job("2").vanished
    assert poller.job_for_service("u2").job_id == "2"
    cluster.during = None
    cluster.answers = [JobsAnswer([job("1")], None)]
    await poller.poll_once()  # listed by nothing since the submit: slurmctld forgot it
    assert poller.job("2").vanished


async def test_job_for_service_prefers_a_live_job():
    cluster = ScriptedCluster([JobsAnswer([job("5", "CANCELLED"), job("7", "RUNNING"), job("9", "FAILED")], None)])
    poller = JobPoller(cluster, interval=1)
    await poller.poll_once()
    assert poller.job_for_service("u1").job_id == "7"
    assert poller.job_for_service("other") is None


async def test_hurry_shortens_the_pause_to_the_hurried_interval_only():
    cluster = ScriptedCluster([JobsAnswer([job("1")], None)] + [JobsAnswer(None, None)] * 20)
    poller = JobPoller(cluster, interval=30)
    poller.HURRIED_INTERVAL = 0.05
    poller.start()
    await asyncio.sleep(0.2)
    assert len(cluster.asked) == 1  # the interval is long: one poll so far
    poller.hurry()
    await asyncio.sleep(0.2)
    await poller.stop()
    assert len(cluster.asked) == 2  # one hurried poll, then back to the long interval


class FailingOnce(ScriptedCluster):
    """Raises `error` at the first poll, then answers as scripted."""

    def __init__(self, error, answers):
        super().__init__(answers)
        self.error = error

    async def jobs(self, since=None, **kw):
        if self.error is not None:
            error, self.error = self.error, None
            self.asked.append(since)
            raise error
        return await super().jobs(since)


async def test_an_unexpected_error_does_not_end_the_poller():
    # An asyncssh channel error (MaxSessions on the login node), an answer of an unexpected shape: the poller
    # says the cluster is unreachable, backs off and goes on; it never stops for good while reporting reachable.
    import asyncssh

    for error in (asyncssh.ChannelOpenError(2, "open failed: MaxSessions"), KeyError("jobs"), ValueError("x")):
        cluster = FailingOnce(error, [JobsAnswer([job("1")], None)] + [JobsAnswer(None, None)] * 50)
        poller = JobPoller(cluster, interval=0.01, max_backoff=0.02)
        poller.start()
        for _ in range(200):
            await asyncio.sleep(0.01)
            if poller.polls >= 2:
                break
        task = poller._task
        await poller.stop()
        assert poller.polls >= 2, f"the poller stopped after {error!r}"
        assert task is not None and not task.done() or task.cancelled()
        assert poller.reachable and poller.job("1").state == "RUNNING"


async def test_while_failing_the_poller_is_not_reachable_and_says_why():
    cluster = FailingOnce(KeyError("jobs"), [JobsAnswer([job("1")], None)])
    poller = JobPoller(cluster, interval=30)
    poller.last_success = 1.0
    poller.start()
    await asyncio.sleep(0.05)
    assert not poller.reachable and "jobs" in poller.last_error
    await poller.stop()


def other_users_jobs(n):
    return [SlurmJob(job_id=str(1000 + i), state="RUNNING", comment=f"someone else's job {i}") for i in range(n)]


async def test_the_cache_keeps_only_aifactorys_jobs():
    cluster = ScriptedCluster([JobsAnswer([job("1"), *other_users_jobs(500)], None)])
    poller = JobPoller(cluster, interval=1)
    await poller.poll_once()
    assert set(poller.jobs) == {"1"} and poller.job_for_service("u1").job_id == "1"


async def test_jobs_long_gone_are_forgotten():
    now = [1000.0]
    cluster = ScriptedCluster([JobsAnswer([job("1", "COMPLETED"), job("2")], None)]
                              + [JobsAnswer([job("2")], None)] * 3)
    poller = JobPoller(cluster, interval=1, clock=lambda: now[0])
    await poller.poll_once()
    await poller.poll_once()
    assert poller.job("1").vanished  # kept a while: its service learns how it ended
    now[0] += poller.FORGET_AFTER + 1
    await poller.poll_once()
    assert poller.job("1") is None and poller.job_for_service("u1").job_id == "2"


async def test_looking_up_a_service_does_not_parse_every_comment(monkeypatch):
    from aifactory.slurm import jobs as jobs_module

    cluster = ScriptedCluster([JobsAnswer([job(str(i), uid=f"u{i}") for i in range(1000)], None)])
    poller = JobPoller(cluster, interval=1)
    await poller.poll_once()
    parsed = []
    original = jobs_module.JobTags.parse.__func__
    monkeypatch.setattr(jobs_module.JobTags, "parse", classmethod(lambda cls, c: parsed.append(c) or original(cls, c)))
    for i in range(100):
        assert poller.job_for_service(f"u{i}").job_id == str(i)
    assert len(parsed) == 0


class ListingCluster:
    """Slurm as the poller sees it: the whole list when asked without "since", else nothing changed (304)."""

    def __init__(self, listed):
        self.listed = listed
        self.asked: list[int | None] = []

    async def jobs(self, since=None, **kw):
        self.asked.append(since)
        return JobsAnswer(None if since is not None else list(self.listed), None)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


async def test_while_a_job_queues_the_whole_list_is_asked_now_and_then_for_slurms_new_estimates():
    comment = "aifactory uid=u1 stage=submitted"
    cluster = ListingCluster([SlurmJob(job_id="3", state="PENDING", comment=comment)])
    clock = Clock()
    poller = JobPoller(cluster, interval=2, clock=clock)
    await poller.poll_once()
    clock.now += 2
    await poller.poll_once()  # just listed: "since"
    # Slurm's backfill scheduler estimated a start without marking the job changed: only a whole list shows it.
    cluster.listed = [SlurmJob(job_id="3", state="PENDING", start_time=1795988071, comment=comment)]
    clock.now += poller.QUEUE_REFRESH
    await poller.poll_once()
    assert poller.job("3").expected_start == 1795988071
    clock.now += 2
    await poller.poll_once()
    assert [since is None for since in cluster.asked] == [True, False, True, False]
    assert poller.polls == 4  # one request per poll, as before


@pytest.mark.parametrize("n", [1, 200])
async def test_with_n_queued_jobs_still_one_request_per_poll_and_a_whole_list_every_30s_whatever_n(n):
    """B3's expectation: the requests per poll interval stay flat in N while services queue."""
    cluster = ListingCluster([SlurmJob(job_id=str(i), state="PENDING", comment=f"aifactory uid=u{i} stage=submitted")
                              for i in range(1, n + 1)])
    clock = Clock()
    poller = JobPoller(cluster, interval=2, clock=clock)
    for _ in range(60):  # two minutes of polls every 2 s
        await poller.poll_once()
        clock.now += 2
    assert len(cluster.asked) == poller.polls == 60
    assert sum(since is None for since in cluster.asked) == 4  # at 0, 30, 60 and 90 s


async def test_without_queued_jobs_every_poll_asks_since():
    cluster = ListingCluster([job("1")])
    clock = Clock()
    poller = JobPoller(cluster, interval=1, clock=clock)
    for _ in range(3):
        await poller.poll_once()
        clock.now += poller.QUEUE_REFRESH
    assert cluster.asked[0] is None and all(isinstance(s, int) for s in cluster.asked[1:])


class UnreachableForAWhile(ScriptedCluster):
    """A cluster whose slurmrestd refuses cancels (unreachable) for its first `down` attempts."""

    def __init__(self, answers, down: int):
        super().__init__(answers)
        self.down = down
        self.cancel_tries: list[str] = []
        self.cancelled: list[str] = []

    async def cancel(self, job_id):
        from aifactory.slurm.errors import SlurmUnreachable

        self.cancel_tries.append(job_id)
        if len(self.cancel_tries) <= self.down:
            raise SlurmUnreachable("slurmrestd at http://slurm unreachable: ConnectError")
        self.cancelled.append(job_id)


async def test_a_cancel_that_did_not_reach_slurm_is_asked_again_after_each_poll_until_taken():
    # A service deleted while slurmrestd was unreachable (its finalizer gone, or never added) has nobody else to
    # cancel its job: seen when the job's cluster was unreachable at the deletion event.
    cluster = UnreachableForAWhile([JobsAnswer([job("7", "PENDING")], None)] * 4, down=1)
    poller = JobPoller(cluster, interval=1)
    await poller.poll_once()
    poller.cancel_later("7", "AIService default/blink was deleted")
    await poller.poll_once()  # still unreachable for the cancel
    assert cluster.cancel_tries == ["7"] and cluster.cancelled == []
    await poller.poll_once()
    assert cluster.cancelled == ["7"]
    assert poller.job("7").state == "CANCELLED"  # nothing adopts it before Slurm lists it ended
    await poller.poll_once()
    assert cluster.cancel_tries == ["7", "7"]  # taken: not asked again


async def test_a_pending_cancel_of_a_job_slurm_lists_ended_is_dropped_unasked():
    cluster = UnreachableForAWhile([JobsAnswer([job("8", "COMPLETED")], None)], down=0)
    poller = JobPoller(cluster, interval=1)
    poller.cancel_later("8", "its spec changed")
    await poller.poll_once()
    assert cluster.cancel_tries == []
