"""One poller per Slurm cluster: every AIService of the cluster is fed from one GET /jobs per interval."""

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
    HURRIED_INTERVAL = 0.5  # while a service starts: at most 2 requests a second per cluster, whatever N

    def __init__(self, bridge: SlurmBridge, interval: float, max_backoff: float = 60.0):
        self.bridge = bridge
        self.interval = interval
        self.max_backoff = max_backoff
        self.jobs: dict[str, SlurmJob] = {}
        self.last_update: int | None = None
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.polls = 0
        self._hurried = False
        self._listed = asyncio.Event()  # set once a full list of the cluster's jobs has come in
        self._remembered: dict[str, float] = {}  # job id -> when a submit put it here (monotonic)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

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
            except SlurmError as exc:
                failures += 1
                self.last_error = str(exc)
                delay = min(self.max_backoff, self.interval * 2 ** min(failures, 6)) * random.uniform(0.8, 1.2)
                log.warning("polling Slurm failed (%d in a row, next try in %.0fs): %s", failures, delay, exc)
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
        started = time.monotonic()
        answer = await self.bridge.jobs(since=self.last_update)
        self.polls += 1
        self.last_error = None
        self.last_success = time.time()
        if answer.jobs is not None:
            seen = {job.job_id: job for job in answer.jobs}
            # Jobs slurmctld forgot (MinJobAge) keep their last known state.
            for job_id, old in self.jobs.items():
                if job_id in seen:
                    self._remembered.pop(job_id, None)
                elif self._remembered.get(job_id, 0) > started:
                    seen[job_id] = old  # submitted while this answer was on its way: not forgotten
                else:
                    seen[job_id] = old if old.vanished else replace(old, vanished=True)
            self.jobs = seen
            self._listed.set()
        self.last_update = answer.last_update or asked_at

    def remember(self, job: SlurmJob) -> None:
        """A job this process just submitted, known before the next poll lists it."""
        self.jobs[job.job_id] = job
        self._remembered[job.job_id] = time.monotonic()

    async def listed(self, timeout: float) -> None:
        """Wait until the cache holds a full list of the cluster's jobs (the first poll after start-up)."""
        await asyncio.wait_for(self._listed.wait(), timeout)

    def job(self, job_id: str) -> SlurmJob | None:
        return self.jobs.get(job_id)

    def job_for_service(self, uid: str) -> SlurmJob | None:
        """The job tagged with this AIService UID: a live one if any, else the newest."""
        tagged = [j for j in self.jobs.values() if j.tags.uid == uid]
        live = [j for j in tagged if not j.finished and not j.vanished]
        pick = live or tagged
        return max(pick, key=lambda j: int(j.job_id)) if pick else None
