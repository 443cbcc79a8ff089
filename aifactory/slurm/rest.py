"""slurmrestd over HTTP(S): the transport under every REST dialect."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx

from aifactory.slurm.bridge import JobsAnswer
from aifactory.slurm.dialects import SUPPORTED, Dialect, dialect_for, errors_of, newest_served
from aifactory.slurm.errors import SlurmAuthError, SlurmError, SlurmUnreachable, SubmitUncertain
from aifactory.slurm.files import ClusterFiles, LocalFiles, NoFiles, SftpFiles
from aifactory.slurm.jobs import JobRequest, JobTags, SlurmJob
from aifactory.slurm.logs import LocalLogs, LogReader, NoLogs
from aifactory.slurm.nodes import SlurmNode
from aifactory.slurm.partitions import SlurmPartition, from_rest, pick_partition
from aifactory.slurm.ssh import SshConnection
from aifactory.slurm.tokens import TokenSource

if TYPE_CHECKING:
    from aifactory.slurm.cli import CliBridge

log = logging.getLogger(__name__)

LARGE_ANSWER = 256 * 1024  # bytes of JSON decoded in a worker thread rather than on the event loop


def _job_id_in(answer: Any) -> bool:
    """Whether a submit answer names the job it made (at the top, or inside `result` in v0.0.40/41)."""
    if not isinstance(answer, dict):
        return False
    return bool(answer.get("job_id") or (answer.get("result") or {}).get("job_id"))


async def _json(content: bytes) -> Any:
    if len(content) > LARGE_ANSWER:
        return await asyncio.to_thread(json.loads, content)
    return json.loads(content)


class RestBridge:
    """A Slurm cluster reached through slurmrestd, directly or through an SSH tunnel to the login node.

    `ssh`: the SSH connection the tunnel (`transport`) runs over; it then also carries the data plane and the
    log tails, and `close()` closes it. `local_logs`: job output files are readable on this side.
    """

    def __init__(self, base_url: str, user: str, tokens: TokenSource, *, api_version: str | None = None,
                 local_logs: bool = False, timeout: float = 20.0, transport: httpx.AsyncBaseTransport | None = None,
                 ssh: SshConnection | None = None, logs: LogReader | None = None,
                 files: ClusterFiles | None = None, commands: "CliBridge | None" = None):
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.tokens = tokens
        self.ssh = ssh
        if logs is None:
            logs = LocalLogs() if local_logs else NoLogs()
        self.logs = logs
        # The cluster's shared storage (registries, metrics files), reached the way its logs are.
        self.files = files or (LocalFiles() if local_logs else SftpFiles(ssh) if ssh else NoFiles())
        # Slurm's commands on the login node, where the cluster is reached over SSH too (sbatch --test-only).
        self.commands = commands
        self.requests_sent = 0
        self._pinned = api_version
        self._dialect: Dialect | None = dialect_for(api_version) if api_version else None
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport,
                                       trust_env=False)
        self._addresses: dict[str, str] = {}

    def __repr__(self) -> str:
        via = f" via SSH {self.ssh.target.where}" if self.ssh else ""
        return f"RestBridge({self.base_url}{via}, user={self.user})"

    @property
    def api_version(self) -> str:
        return self._dialect.version if self._dialect else (self._pinned or "")

    async def dialect(self) -> Dialect:
        if self._dialect is None:
            self._dialect = dialect_for(await self.detect_version())
        return self._dialect

    async def detect_version(self) -> str:
        """The newest supported API version the server lists at /openapi/v3."""
        spec = await self._call("GET", "/openapi/v3")  # 22.05 wants auth here too
        paths = list((spec or {}).get("paths", {}))
        version = newest_served(paths)
        if version is None:
            served = sorted({p.split("/")[2] for p in paths if p.startswith("/slurm/v") and p.count("/") >= 3})
            raise SlurmError(f"slurmrestd serves {served or 'no job API'}; aifactory speaks {list(SUPPORTED)}")
        return version

    async def _call(self, method: str, path: str, *, body: Any = None, params: dict | None = None,
                    auth: bool = True, ok_statuses: tuple[int, ...] = (200,), user: str | None = None,
                    submit: bool = False) -> Any:
        """One request, with the token renewed once if refused. `submit`: a lost answer after the request may
        have been taken is SubmitUncertain, not merely unreachable."""
        for attempt in (1, 2):
            headers = {}
            if auth:
                # `user`: act for another user (a tenant's), which only a SlurmUser/root token may do.
                headers = {"X-SLURM-USER-NAME": user or self.user,
                           "X-SLURM-USER-TOKEN": await (self.tokens.token() if attempt == 1 else self.tokens.renew())}
            try:
                self.requests_sent += 1
                response = await self._http.request(method, path, json=body, params=params, headers=headers)
            except httpx.HTTPError as exc:
                via = f" (through SSH to {self.ssh.target.where})" if self.ssh else ""
                words = f"slurmrestd at {self.base_url}{via} unreachable: {type(exc).__name__}: {exc}"
                never_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
                raise (SubmitUncertain if submit and not never_sent else SlurmUnreachable)(words) from exc
            if response.status_code == 304:
                return None
            try:
                data = (await _json(response.content)) if response.content else {}
            except ValueError:
                data = {}
            errors = errors_of(data) if isinstance(data, dict) else []
            text = "; ".join(errors) or response.text.strip()[:500] or response.reason_phrase
            if auth and self._auth_refused(response.status_code, data):
                if attempt == 1:
                    continue  # the token may have expired: renew once
                raise SlurmAuthError(f"slurmrestd refused the token ({response.status_code}: {text})",
                                     response.status_code)
            if submit and response.status_code == 200 and _job_id_in(data):
                # 22.05 takes a job no node can run now and says so in `errors` (26.05 in `warnings`): the job
                # exists and waits (reason PartitionConfig); treating it as refused would leave it behind.
                if errors:
                    log.info("slurmrestd took the job with: %s", "; ".join(errors))
                return data
            if response.status_code not in ok_statuses or (errors and method != "GET"):
                if response.status_code in (502, 503, 504):
                    # A gateway (or slurmrestd) gave up waiting: slurmctld may have taken the job meanwhile.
                    raise (SubmitUncertain if submit else SlurmUnreachable)(f"slurmrestd: {text}",
                                                                             response.status_code)
                raise SlurmError(text, response.status_code)
            return data
        raise AssertionError("unreachable")

    def _auth_refused(self, status: int, data: Any) -> bool:
        """A refused token: 401, 511 from 24.11 on, 500 "Unspecified error" on 22.05 (the dialect knows)."""
        if self._dialect is not None:
            return self._dialect.auth_refused(status, data)
        return status in (401, 511)

    def _path(self, dialect: Dialect, rest: str) -> str:
        return f"/slurm/{dialect.version}{rest}"

    async def submit(self, request: JobRequest) -> str:
        dialect = await self.dialect()
        answer = await self._call("POST", self._path(dialect, "/job/submit"), body=dialect.submit_body(request),
                                  user=request.user, submit=True)
        return dialect.submitted_job_id(answer)

    async def job(self, job_id: str) -> SlurmJob | None:
        dialect = await self.dialect()
        try:
            answer = await self._call("GET", self._path(dialect, f"/job/{job_id}"))
        except SlurmError as exc:
            if exc.status in (404, 500) and not isinstance(exc, SlurmUnreachable):
                # 22.05 answers an unknown (or aged-out) job with 500 "Invalid job id specified".
                if "invalid job id" in str(exc).lower() or exc.status == 404:
                    return None
            raise
        jobs = dialect.jobs(answer or {})
        return jobs[0] if jobs else None

    async def jobs(self, since: int | None = None, *, tagged_only: bool = False) -> JobsAnswer:
        dialect = await self.dialect()
        params = {"update_time": dialect.update_time(since, int(time.time()))} if since else None
        answer = await self._call("GET", self._path(dialect, "/jobs"), params=params, ok_statuses=(200, 304))
        if answer is None:
            return JobsAnswer(jobs=None, last_update=since)  # 22.05: 304
        keep = (lambda raw: JobTags.tagged(raw.get("comment"))) if tagged_only else None
        # A cluster's whole list can be thousands of jobs: read it in a worker thread, not on the event loop.
        jobs = await asyncio.to_thread(dialect.jobs, answer, keep)
        last = dialect.last_update(answer)
        if since and not jobs:
            # From 23.11 on "nothing changed" is 200 with no jobs (and last_update 0); when anything changed the
            # answer is every job, so an empty list after update_time never means "all jobs are gone".
            return JobsAnswer(jobs=None, last_update=last or since)
        return JobsAnswer(jobs=jobs, last_update=last)

    async def cancel(self, job_id: str) -> None:
        dialect = await self.dialect()
        try:
            await self._call("DELETE", self._path(dialect, f"/job/{job_id}"))
        except SlurmError as exc:
            text = str(exc).lower()
            # Already ended or already gone: what cancel wanted is true.
            if not isinstance(exc, SlurmUnreachable) and ("completed" in text or "invalid job id" in text
                                                          or exc.status == 404):
                return
            raise

    async def node_address(self, node: str) -> str:
        if node not in self._addresses:
            dialect = await self.dialect()
            answer = await self._call("GET", self._path(dialect, f"/node/{node}"))
            self._addresses[node] = dialect.node_address(answer or {}) or node
        return self._addresses[node]

    async def nodes(self) -> list[SlurmNode]:
        # No update_time: free memory and load change at every slurmd report, so nearly every answer would differ.
        dialect = await self.dialect()
        return dialect.nodes(await self._call("GET", self._path(dialect, "/nodes")) or {})

    async def partition(self, name: str | None) -> SlurmPartition:
        """The partition (the cluster's default one when name is None); Slurm's words when it has none such."""
        dialect = await self.dialect()
        answer = await self._call("GET", self._path(dialect, f"/partition/{name}" if name else "/partitions"))
        found = [from_rest(raw) for raw in (answer or {}).get("partitions") or []]
        errors = errors_of(answer or {})
        if not found and errors:
            raise SlurmError("; ".join(errors))
        return pick_partition(found, name)

    async def test_submit(self, request: JobRequest) -> str | None:
        """`sbatch --test-only` on the login node when the cluster is reached over SSH; None otherwise (slurmrestd
        has no way to test a job without submitting it)."""
        return await self.commands.test_submit(request) if self.commands is not None else None

    async def log_tail(self, job: SlurmJob, lines: int) -> str | None:
        return await self.logs.tail(job, lines)

    def http_transport(self) -> httpx.AsyncBaseTransport:
        """A transport to the services on the compute nodes: through the SSH connection when there is one."""
        if self.ssh is not None:
            return self.ssh.http_transport()
        return httpx.AsyncHTTPTransport(trust_env=False)

    async def open_connection(self, host: str, port: int) -> tuple[Any, Any]:
        """A byte stream (reader, writer) to host:port on the cluster's network."""
        if self.ssh is not None:
            return await self.ssh.open_connection(host, port)
        return await asyncio.open_connection(host, port)

    async def close(self) -> None:
        await self._http.aclose()
        if self.ssh is not None:
            await self.ssh.close()
