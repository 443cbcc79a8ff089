"""slurmrestd over HTTP(S): the transport under every REST dialect."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx

from aifactory.slurm.bridge import JobsAnswer
from aifactory.slurm.dialects import Dialect, dialect_for, errors_of
from aifactory.slurm.errors import SlurmAuthError, SlurmError, SlurmUnreachable
from aifactory.slurm.jobs import JobRequest, SlurmJob
from aifactory.slurm.logs import JOB_STDERR, JOB_STDOUT, expand_pattern, tail_file
from aifactory.slurm.tokens import TokenSource

log = logging.getLogger(__name__)


class RestBridge:
    """A Slurm cluster reached through slurmrestd. `local_logs`: job output files are readable here."""

    def __init__(self, base_url: str, user: str, tokens: TokenSource, *, api_version: str | None = None,
                 local_logs: bool = False, timeout: float = 20.0, transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.tokens = tokens
        self.local_logs = local_logs
        self.requests_sent = 0
        self._pinned = api_version
        self._dialect: Dialect | None = dialect_for(api_version) if api_version else None
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)
        self._addresses: dict[str, str] = {}

    @property
    def api_version(self) -> str:
        return self._dialect.version if self._dialect else (self._pinned or "")

    async def dialect(self) -> Dialect:
        if self._dialect is None:
            self._dialect = dialect_for(await self.detect_version())
        return self._dialect

    async def detect_version(self) -> str:
        """The newest supported API version the server lists at /openapi/v3."""
        from aifactory.slurm.dialects import SUPPORTED

        spec = await self._call("GET", "/openapi/v3")  # 22.05 wants auth here too
        served = {p.split("/")[2] for p in (spec or {}).get("paths", {}) if p.startswith("/slurm/v")}
        for version in sorted(SUPPORTED, reverse=True):
            if version in served:
                return version
        raise SlurmError(f"slurmrestd serves {sorted(served) or 'no job API'}; aifactory speaks {list(SUPPORTED)}")

    async def _call(self, method: str, path: str, *, body: Any = None, params: dict | None = None,
                    auth: bool = True, ok_statuses: tuple[int, ...] = (200,)) -> Any:
        for attempt in (1, 2):
            headers = {}
            if auth:
                headers = {"X-SLURM-USER-NAME": self.user,
                           "X-SLURM-USER-TOKEN": await (self.tokens.token() if attempt == 1 else self.tokens.renew())}
            try:
                self.requests_sent += 1
                response = await self._http.request(method, path, json=body, params=params, headers=headers)
            except httpx.HTTPError as exc:
                raise SlurmUnreachable(f"slurmrestd at {self.base_url} unreachable: {exc!r}") from exc
            if response.status_code == 401 and auth and attempt == 1:
                continue  # the token may have expired: renew once
            if response.status_code == 304:
                return None
            try:
                data = response.json() if response.content else {}
            except ValueError:
                data = {}
            if response.status_code == 401:
                raise SlurmAuthError("slurmrestd refused the token (401)", 401)
            errors = errors_of(data) if isinstance(data, dict) else []
            if response.status_code not in ok_statuses or (errors and method != "GET"):
                text = "; ".join(errors) or response.text.strip()[:500] or response.reason_phrase
                if response.status_code in (502, 503, 504):
                    raise SlurmUnreachable(f"slurmrestd: {text}", response.status_code)
                raise SlurmError(text, response.status_code)
            return data
        raise AssertionError("unreachable")

    def _path(self, dialect: Dialect, rest: str) -> str:
        return f"/slurm/{dialect.version}{rest}"

    async def submit(self, request: JobRequest) -> str:
        dialect = await self.dialect()
        answer = await self._call("POST", self._path(dialect, "/job/submit"), body=dialect.submit_body(request))
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

    async def jobs(self, since: int | None = None) -> JobsAnswer:
        dialect = await self.dialect()
        params = {"update_time": str(since)} if since else None
        answer = await self._call("GET", self._path(dialect, "/jobs"), params=params, ok_statuses=(200, 304))
        if answer is None:
            return JobsAnswer(jobs=None, last_update=since)
        jobs = dialect.jobs(answer)
        last = answer.get("last_update") if isinstance(answer.get("last_update"), int) else None
        if since and not jobs and answer.get("warnings"):
            return JobsAnswer(jobs=None, last_update=last or since)  # 23.11+: empty list = unchanged
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

    async def log_tail(self, job: SlurmJob, lines: int) -> str | None:
        if not self.local_logs:
            return None
        parts = []
        # Some dialects leave the output paths empty; aifactory's jobs use known names then.
        for label, pattern in (("stdout", job.standard_output or JOB_STDOUT),
                               ("stderr", job.standard_error or JOB_STDERR)):
            path = Path(expand_pattern(pattern, job.job_id, job.name))
            if not path.is_absolute() and job.working_directory:
                path = Path(job.working_directory) / path
            text = tail_file(path, lines)
            if text:
                parts.append((label, path, text))
        if not parts:
            return None
        if len(parts) == 1 or parts[0][1] == parts[1][1]:
            return parts[0][2]
        return "".join(f"==> {label} <==\n{text}" for label, _, text in parts)

    async def close(self) -> None:
        await self._http.aclose()
