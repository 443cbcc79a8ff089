"""One poller per Slurm cluster: every AIService of the cluster is fed from one GET /jobs per interval.

The cache holds aifactory's jobs only (those whose comment carries its tag), indexed by the AIService UID, and
forgets a job slurmctld stopped listing FORGET_AFTER seconds later. Whatever goes wrong in a poll (Slurm's
refusal, a lost SSH channel, an answer of an unexpected shape) makes the cluster unreachable until a poll
succeeds again; the poller itself never stops. A cancel that could not reach Slurm when a resource went (its
deletion event has no retry of its own) is asked again after each poll that succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import replace

from aifactory.slurm.bridge import SlurmBridge
from aifactory.slurm.errors import SlurmError
from aifactory.slurm.jobs import SlurmJob

log = logging.getLogger(__name__)


class JobPoller:
    """Keeps the last known state of every job of one cluster; handlers read it instead of asking Slurm."""

    CLOCK_MARGIN = 5
    # Slurm's backfill scheduler re-estimates when queued jobs start (every bf_interval, 30 s by default) without
    # marking any job changed: a list asked "since" never shows a new estimate (seen on 22.05: 304 while squeue's
    # START_TIME moved). While a job is queued, the poll asks for the whole list at most this often instead; the
    # number of requests stays one per interval.
    QUEUE_REFRESH = 30.0
    HURRIED_INTERVAL = 0.5  # while a service starts: at most 2 requests a second per cluster, whatever N
    FORGET_AFTER = 3600.0  # s a job slurmctld no longer lists stays known (its service learns how it ended)

    def __init__(self, bridge: SlurmBridge, interval: float, max_backoff: float = 60.0,
                 clock=time.monotonic):
        self.bridge = bridge
        self.interval = interval
        self.max_backoff = max_backoff
        self._clock = clock
        self.jobs: dict[str, SlurmJob] = {}
        self._by_uid: dict[str, list[str]] = {}  # AIService UID -> its job ids
        self._vanished_at: dict[str, float] = {}
        self.last_update: int | None = None
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.polls = 0
        self._hurried = False
        self._listed = asyncio.Event()  # set once a full list of the cluster's jobs has come in
        self._listed_at: float | None = None  # when the last whole list was asked for (monotonic)
        self._remembered: dict[str, float] = {}  # job id -> when a submit put it here (monotonic)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._to_cancel: dict[str, str] = {}  # job id -> why: cancels Slurm could not be asked for yet

    @property
    def reachable(self) -> bool:
        return self.last_error is None and self.last_success is not None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="aifactory-job-poller")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def hurry(self) -> None:
        """Poll sooner next time: a job has started and its service is about to say where it listens."""
        self._hurried = True

    def wake(self) -> None:
        """Poll now instead of at the next interval (after a submit or a cancel)."""
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self.poll_once()
                failures = 0
                delay = self.interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  (whatever it was, the cluster's services must not freeze)
                failures += 1
                expected = isinstance(exc, SlurmError)
                self.last_error = str(exc) if expected else f"unexpected {type(exc).__name__}: {exc}"
                delay = min(self.max_backoff, self.interval * 2 ** min(failures, 6)) * random.uniform(0.8, 1.2)
                log.warning("polling Slurm failed (%d in a row, next try in %.0fs): %s", failures, delay,
                            self.last_error, exc_info=not expected)
            self._hurried = False
            await self._pause(delay, may_hurry=failures == 0)
            self._wake.clear()

    async def _pause(self, delay: float, may_hurry: bool) -> None:
        """Until the next poll: `delay`, or sooner when woken, or HURRIED_INTERVAL once someone hurries."""
        began = time.monotonic()
        while True:
            elapsed = time.monotonic() - began
            left = delay - elapsed
            if may_hurry and self._hurried:
                left = min(left, self.HURRIED_INTERVAL - elapsed)
            if left <= 0:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=min(left, self.HURRIED_INTERVAL))
                return
            except asyncio.TimeoutError:
                continue

    async def poll_once(self) -> None:
        # Dialects without `last_update` (v0.0.38) get our own clock, a few seconds early against skew.
        asked_at = int(time.time()) - self.CLOCK_MARGIN
        started = self._clock()
        since = self._since(started)
        answer = await self.bridge.jobs(since=since, tagged_only=True)
        self.polls += 1
        self.last_error = None
        self.last_success = time.time()
        if answer.jobs is not None:
            self._take(answer.jobs, started)
            self._listed.set()
            if since is None:
                self._listed_at = started
        self.last_update = answer.last_update or asked_at
        await self._cancel_pending()

    def _take(self, listed: list[SlurmJob], started: float) -> None:
        """A full list of the cluster's jobs replaces the cache; jobs it lacks keep their last known state (marked
        vanished) for FORGET_AFTER seconds, unless this process submitted them after the list was asked for."""
        seen = {job.job_id: job for job in listed if job.tags.uid}
        now = self._clock()
        for job_id, old in self.jobs.items():
            if job_id in seen:
                self._remembered.pop(job_id, None)
                self._vanished_at.pop(job_id, None)
            elif self._remembered.get(job_id, 0) > started:
                seen[job_id] = old  # submitted while this answer was on its way: not forgotten
            elif now - self._vanished_at.setdefault(job_id, now) <= self.FORGET_AFTER:
                seen[job_id] = old if old.vanished else replace(old, vanished=True)
            else:
                self._vanished_at.pop(job_id, None)
                self._remembered.pop(job_id, None)
        self.jobs = seen
        by_uid: dict[str, list[str]] = {}
        for job in seen.values():
            by_uid.setdefault(job.tags.uid, []).append(job.job_id)
        self._by_uid = by_uid

    def _since(self, now: float) -> int | None:
        """What to ask the jobs "since": nothing (the whole list) at first, and now and then while a job queues."""
        if self.last_update is None:
            return None
        stale = self._listed_at is None or now - self._listed_at >= self.QUEUE_REFRESH
        if stale and any(job.queued and not job.vanished for job in self.jobs.values()):
            return None
        return self.last_update

    async def cancel(self, job_id: str, why: str) -> bool:
        """Cancel a job and show it cancelled in the cache, so that nothing adopts it before a poll says it ended;
        whether Slurm took the cancel now. If not (unreachable, or refused for a reason other than the job's end),
        it is asked again after each poll that succeeds, until Slurm takes it or lists the job ended."""
        try:
            await self.bridge.cancel(job_id)
        except SlurmError as exc:
            log.warning("could not cancel job %s (%s), will try again after the next poll: %s", job_id, why, exc)
            self.cancel_later(job_id, why)
            return False
        self._to_cancel.pop(job_id, None)
        job = self.job(job_id)
        if job is not None:
            self.remember(replace(job, state="CANCELLED"))
        return True

    def cancel_later(self, job_id: str, why: str) -> None:
        """A cancel to ask for after the next poll that succeeds (and after each one until Slurm takes it)."""
        self._to_cancel[job_id] = why

    async def _cancel_pending(self) -> None:
        for job_id, why in list(self._to_cancel.items()):
            job = self.job(job_id)
            if job is not None and (job.finished or job.vanished):
                del self._to_cancel[job_id]
            elif not await self.cancel(job_id, why):
                return  # the rest would most likely fail alike
            else:
                log.warning("cancelled Slurm job %s: %s", job_id, why)

    def remember(self, job: SlurmJob) -> None:
        """A job this process just submitted (or looked up), known before the next poll lists it."""
        if job.job_id not in self.jobs and job.tags.uid:
            self._by_uid.setdefault(job.tags.uid, []).append(job.job_id)
        self.jobs[job.job_id] = job
        self._remembered[job.job_id] = self._clock()

    async def listed(self, timeout: float) -> None:
        """Wait until the cache holds a full list of the cluster's jobs (the first poll after start-up)."""
        if not self._listed.is_set():  # once it has, no detour through the event loop (a submit waits on it)
            await asyncio.wait_for(self._listed.wait(), timeout)

    def job(self, job_id: str) -> SlurmJob | None:
        return self.jobs.get(job_id)

    def jobs_for_service(self, uid: str) -> list[SlurmJob]:
        """Every known job tagged with this AIService UID, oldest first."""
        found = (self.jobs.get(job_id) for job_id in self._by_uid.get(uid, ()))
        return sorted((j for j in found if j is not None and j.tags.uid == uid), key=lambda j: int(j.job_id))

    def job_for_service(self, uid: str) -> SlurmJob | None:
        """The job tagged with this AIService UID: a live one if any, else the newest."""
        tagged = self.jobs_for_service(uid)
        live = [j for j in tagged if not j.finished and not j.vanished]
        pick = live or tagged
        return pick[-1] if pick else None
