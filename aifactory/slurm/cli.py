"""Slurm's own commands over SSH, for sites without slurmrestd: sbatch, squeue --json, scancel, scontrol.

Every value that comes from a user (environment, names, paths) reaches the login node either quoted by shlex
or as data on stdin; none is ever spliced into a shell line as syntax. The job's environment travels inside
the batch script (stdin, never a command line that `ps` shows on a shared login node), as quoted `export`
lines at its top, and sbatch runs with `--export=NONE`: the job gets exactly these variables plus Slurm's own,
sbatch's own environment stays the login node's, and no `--export-file` is needed (Slurm 23.11 removed it,
24.05 brought it back, 26.05 accepts and ignores it).
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from typing import Any

import httpx

from aifactory.slurm.bridge import JobsAnswer
from aifactory.slurm.dialects import Dialect, dialect_for, errors_of
from aifactory.slurm.errors import SlurmError, SlurmUnreachable
from aifactory.slurm.partitions import SlurmPartition, from_scontrol, pick_partition
from aifactory.slurm.files import ClusterFiles, SftpFiles
from aifactory.slurm.jobs import JobRequest, JobTags, SlurmJob
from aifactory.slurm.logs import LogReader, SshLogs
from aifactory.slurm.nodes import SlurmNode
from aifactory.slurm.ssh import CommandResult, SshConnection

# Texts of Slurm's commands that mean "slurmctld did not answer" rather than "refused".
_UNREACHABLE = ("unable to contact slurm controller", "connection refused", "socket timed out",
                "could not establish a configuration source", "communication connection failure")
_GONE = ("invalid job id", "already completing or completed", "job has already finished")


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def sbatch_argv(request: JobRequest) -> list[str]:
    """sbatch's options for a request; the script (with the environment at its top) goes on stdin."""
    argv = ["sbatch", "--parsable", "--export=NONE", f"--job-name={request.name}",
            f"--chdir={request.working_directory}", f"--output={request.standard_output}",
            f"--error={request.standard_error}"]
    optional = {
        "--comment": request.comment or None,
        "--partition": request.partition,
        "--account": request.account,
        "--qos": request.qos,
        "--cpus-per-task": request.cpus_per_task,
        "--mem": f"{request.memory_per_node_mb}M" if request.memory_per_node_mb else None,
        "--time": request.time_limit_minutes,
        "--nodes": request.nodes,
        "--gres": f"gpu:{request.gpus_per_node}" if request.gpus_per_node else None,
        "--nodelist": request.nodelist,
        # A tenant's user: sbatch lets root (or SlurmUser) submit for another user.
        "--uid": request.user,
    }
    argv += [f"{flag}={value}" for flag, value in optional.items() if value is not None]
    return argv


def script_with_environment(script: str, environment: dict[str, str]) -> str:
    """The batch script with the job's environment exported at its top, each value quoted by shlex (so bash reads
    it back byte for byte), after the shebang and the leading comments (#SBATCH lines must stay first)."""
    for key, value in environment.items():
        if not ENV_NAME.fullmatch(key) or "\0" in value:
            raise SlurmError(f"environment entry {key!r} cannot be passed to sbatch")
    lines = script.splitlines(keepends=True)
    at = 0
    while at < len(lines) and (lines[at].startswith("#") or not lines[at].strip()):
        at += 1
    if lines and at == len(lines) and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    exports = ["# The job's environment (aifactory, transport ssh-cli: sbatch --export=NONE).\n",
               *(f"export {k}={shlex.quote(v)}\n" for k, v in environment.items()),
               # srun inside the job takes the whole environment, not sbatch's NONE.
               "export SLURM_EXPORT_ENV=ALL\n"]
    return "".join(lines[:at] + exports + lines[at:])


def submit_line(request: JobRequest, test_only: bool = False) -> str:
    """The command that submits a request; the script, environment included, goes on its stdin.
    test_only: `sbatch --test-only`, which checks the job and estimates its start without submitting it."""
    return shlex.join(sbatch_argv(request) + (["--test-only"] if test_only else []))


def parse_test_only(result: CommandResult) -> str:
    """sbatch --test-only's estimate ("Job 12 to start at 2026-11-29T22:27:19 using 1 processors on nodes vm in
    partition debug"), or Slurm's words for why the job would be refused."""
    if result.exit_status == 0:
        for line in (result.stderr + "\n" + result.stdout).splitlines():
            if " to start at " in line:
                return re.sub(r"^\w+: ", "", line.strip())
    raise _command_error("sbatch --test-only", result)


def parse_sbatch(result: CommandResult) -> str:
    if result.exit_status == 0:
        first = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
        job_id = first.split(";")[0].strip()  # --parsable: "id" or "id;cluster"
        if job_id.isdigit():
            return job_id
    raise _command_error("sbatch", result)


def _command_error(command: str, result: CommandResult) -> SlurmError:
    text = _slurm_words(result.stderr) or _slurm_words(result.stdout) or f"{command} exited {result.exit_status}"
    if any(t in text.lower() for t in _UNREACHABLE):
        return SlurmUnreachable(f"{command}: {text}")
    return SlurmError(text)


def _slurm_words(output: str) -> str:
    """Slurm's message without the "sbatch: error: " prefixes."""
    lines = [re.sub(r"^\w+: (error|fatal): ", "", line).strip() for line in output.strip().splitlines()]
    return "; ".join(line for line in lines if line)


def dialect_of_answer(answer: dict[str, Any], pinned: str | None = None) -> Dialect:
    """The JSON shape of `squeue --json`: 22.05 says openapi/v0.0.38, newer ones name their data_parser."""
    plugin = (answer.get("meta") or {}).get("plugin") or {}
    for value in (plugin.get("data_parser"), plugin.get("type")):
        found = re.search(r"v0\.0\.\d+", value or "")
        if found:
            try:
                return dialect_for(found.group(0))
            except ValueError:
                pass
    if pinned:
        return dialect_for(pinned)
    jobs, nodes = answer.get("jobs") or [], answer.get("nodes") or []
    listed = (jobs and isinstance(jobs[0].get("job_state"), list)) or (nodes and isinstance(nodes[0].get("state"), list))
    return dialect_for("v0.0.40" if listed else "v0.0.38")


class CliBridge:
    """A Slurm cluster driven through its commands on the login node."""

    def __init__(self, ssh: SshConnection, *, environment: dict[str, str] | None = None, prefix: str = "",
                 api_version: str | None = None, logs: LogReader | None = None, timeout: float = 60.0,
                 files: ClusterFiles | None = None):
        self.ssh = ssh
        self.environment = dict(environment or {})
        self.prefix = prefix
        self.logs = logs or SshLogs(ssh)
        self.files = files or SftpFiles(ssh)
        self.timeout = timeout
        self.requests_sent = 0  # commands run
        self._pinned = api_version
        self._seen_version: str | None = None
        self._addresses: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"CliBridge({self.ssh.target.where})"

    @property
    def api_version(self) -> str:
        version = self._seen_version or self._pinned
        return f"cli ({version})" if version else "cli"

    async def _run(self, argv: list[str] | str, input: str | None = None, once: bool = False) -> CommandResult:
        self.requests_sent += 1
        return await self.ssh.run(argv, input=input, environment=self.environment, prefix=self.prefix,
                                  timeout=self.timeout, once=once)

    async def submit(self, request: JobRequest) -> str:
        script = script_with_environment(request.script, request.environment)
        # Never run twice: a second sbatch after a lost connection could be a second job.
        return parse_sbatch(await self._run(submit_line(request), input=script, once=True))

    async def test_submit(self, request: JobRequest) -> str | None:
        """Slurm's estimate of when the job would start, from `sbatch --test-only` (nothing is submitted)."""
        script = script_with_environment(request.script, request.environment)
        return parse_test_only(await self._run(submit_line(request, test_only=True), input=script))

    async def partition(self, name: str | None) -> SlurmPartition:
        """The partition (the cluster's default one when name is None), from `scontrol show partition`."""
        result = await self._run(["scontrol", "show", "partition", *([name] if name else []), "--oneliner"])
        if result.exit_status != 0:
            raise _command_error("scontrol show partition", result)
        found = [from_scontrol(line) for line in result.stdout.splitlines() if line.startswith("PartitionName=")]
        return pick_partition(found, name)

    async def _squeue(self, job_id: str | None = None, tagged_only: bool = False) -> list[SlurmJob]:
        # --states=all: from 24.05.1 on squeue --json leaves finished jobs out even with --jobs (SchedMD ff14834caa).
        argv = ["squeue", "--json", "--states=all"] + ([f"--jobs={job_id}"] if job_id else [])
        result = await self._run(argv)
        if result.exit_status != 0:
            if job_id and "invalid job id" in (result.stderr + result.stdout).lower():
                return []  # 23.02+ honour --jobs and refuse an id slurmctld forgot
            raise _command_error("squeue", result)
        try:
            answer = await asyncio.to_thread(json.loads, result.stdout)
        except ValueError:
            raise SlurmError(f"squeue --json printed no JSON: {result.stdout[:200]!r}") from None
        errors = errors_of(answer)
        if errors:
            raise _command_error("squeue", CommandResult(1, "", "; ".join(errors)))
        dialect = dialect_of_answer(answer, self._pinned)
        self._seen_version = dialect.version
        keep = (lambda raw: JobTags.tagged(raw.get("comment"))) if tagged_only else None
        return await asyncio.to_thread(dialect.jobs, answer, keep)

    async def job(self, job_id: str) -> SlurmJob | None:
        # 22.05's squeue --json ignores --jobs and lists every job: pick ours.
        return next((j for j in await self._squeue(job_id) if j.job_id == str(job_id)), None)

    async def jobs(self, since: int | None = None, *, tagged_only: bool = False) -> JobsAnswer:
        # squeue has no update_time: every poll is the full list (one command per interval).
        return JobsAnswer(jobs=await self._squeue(tagged_only=tagged_only), last_update=None)

    async def cancel(self, job_id: str) -> None:
        result = await self._run(["scancel", str(job_id)])
        text = (result.stderr + result.stdout).lower()
        if result.exit_status == 0 and "error" not in text:
            return
        if any(t in text for t in _GONE):
            return  # already ended or forgotten: what cancel wanted is true
        raise _command_error("scancel", result)

    async def node_address(self, node: str) -> str:
        if node not in self._addresses:
            result = await self._run(["scontrol", "show", "node", node, "--oneliner"])
            if result.exit_status != 0:
                raise _command_error("scontrol", result)
            found = re.search(r"\bNodeAddr=(\S+)", result.stdout)
            self._addresses[node] = found.group(1) if found else node
        return self._addresses[node]

    # `scontrol show node --json` prints slurmrestd's nodes answer from 23.02 on; 22.05's scontrol has no --json,
    # and its `sinfo --json` prints that answer instead (from 23.11 sinfo --json lists partition entries).
    NODES_LINE = "scontrol show node --json || sinfo --json"

    async def nodes(self) -> list[SlurmNode]:
        result = await self._run(self.NODES_LINE)
        if result.exit_status != 0:
            raise _command_error("scontrol show node", result)
        try:
            answer = json.loads(result.stdout)
        except ValueError:
            raise SlurmError(f"{self.NODES_LINE} printed no JSON: {result.stdout[:200]!r}") from None
        errors = errors_of(answer)
        if errors:
            raise _command_error("scontrol show node", CommandResult(1, "", "; ".join(errors)))
        return dialect_of_answer(answer, self._pinned).nodes(answer)

    async def log_tail(self, job: SlurmJob, lines: int) -> str | None:
        return await self.logs.tail(job, lines)

    def http_transport(self) -> httpx.AsyncBaseTransport:
        return self.ssh.http_transport()

    async def open_connection(self, host: str, port: int) -> tuple[Any, Any]:
        return await self.ssh.open_connection(host, port)

    async def close(self) -> None:
        await self.ssh.close()
