"""Reading the tail of a job's output files, from this side's filesystem or over SSH on the login node."""

from __future__ import annotations

from collections import deque
from pathlib import PurePosixPath, Path
from typing import TYPE_CHECKING, Protocol

from aifactory.slurm.jobs import SlurmJob

if TYPE_CHECKING:
    from aifactory.slurm.ssh import SshConnection


# Where aifactory's jobs write their output, relative to their working directory.
JOB_STDOUT = "aifactory-%j.out"
JOB_STDERR = "aifactory-%j.err"


def expand_pattern(pattern: str, job_id: str, name: str = "") -> str:
    """Slurm's filename patterns for the parts aifactory uses (%j, %x, %%)."""
    return pattern.replace("%%", "\0").replace("%j", job_id).replace("%x", name).replace("\0", "%")


def tail_file(path: Path, lines: int) -> str | None:
    """The last `lines` lines of a file, or None when it does not exist (yet)."""
    try:
        with path.open("r", errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except FileNotFoundError:
        return None


def output_paths(job: SlurmJob) -> list[tuple[str, str]]:
    """(label, absolute path) of the job's stdout and stderr; one entry when both go to the same file."""
    out = []
    # Some dialects leave the output paths empty; aifactory's jobs use known names then.
    for label, pattern in (("stdout", job.standard_output or JOB_STDOUT),
                           ("stderr", job.standard_error or JOB_STDERR)):
        path = PurePosixPath(expand_pattern(pattern, job.job_id, job.name))
        if not path.is_absolute() and job.working_directory:
            path = PurePosixPath(job.working_directory) / path
        if str(path) not in (p for _, p in out):
            out.append((label, str(path)))
    return out


def combine(parts: list[tuple[str, str]]) -> str | None:
    """One text from the (label, text) tails that exist."""
    parts = [(label, text) for label, text in parts if text]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0][1]
    return "".join(f"==> {label} <==\n{text}" for label, text in parts)


class LogReader(Protocol):
    async def tail(self, job: SlurmJob, lines: int) -> str | None: ...


class NoLogs:
    async def tail(self, job: SlurmJob, lines: int) -> str | None:
        return None


class LocalLogs:
    """The job's files are on this side's filesystem (shared filesystem, the local stack)."""

    async def tail(self, job: SlurmJob, lines: int) -> str | None:
        return combine([(label, tail_file(Path(path), lines) or "") for label, path in output_paths(job)])


class SshLogs:
    """`tail -n N` of the job's files, run on the login node."""

    def __init__(self, ssh: "SshConnection"):
        self.ssh = ssh

    async def tail(self, job: SlurmJob, lines: int) -> str | None:
        parts = []
        for label, path in output_paths(job):
            # argv quoted by shlex: a path never becomes shell syntax.
            done = await self.ssh.run(["tail", "-n", str(int(lines)), "--", path], timeout=20)
            parts.append((label, done.stdout if done.exit_status == 0 else ""))
        return combine(parts)
