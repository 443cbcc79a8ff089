"""Reading the tail of a job's output files, from this side's filesystem or over SSH on the login node.

A tail is bounded (MAX_TAIL_LINES lines, MAX_TAIL_BYTES bytes, whatever is asked) and read from the end of the
file: a job's output may be gigabytes, or one endless line. Local files are read in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from aifactory.slurm.jobs import SlurmJob

if TYPE_CHECKING:
    from aifactory.slurm.ssh import SshConnection


# Where aifactory's jobs write their output, relative to their working directory.
JOB_STDOUT = "aifactory-%j.out"
JOB_STDERR = "aifactory-%j.err"
MAX_TAIL_LINES = 10_000
MAX_TAIL_BYTES = 1024 * 1024
_BLOCK = 64 * 1024


def expand_pattern(pattern: str, job_id: str, name: str = "") -> str:
    """Slurm's filename patterns for the parts aifactory uses (%j, %x, %%)."""
    return pattern.replace("%%", "\0").replace("%j", job_id).replace("%x", name).replace("\0", "%")


def bounded(lines: int) -> int:
    return max(0, min(int(lines), MAX_TAIL_LINES))


def tail_file(path: Path, lines: int) -> str | None:
    """The last `lines` lines of a file (at most MAX_TAIL_LINES and MAX_TAIL_BYTES), read backwards from its end;
    None when it does not exist (yet)."""
    lines = bounded(lines)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        end = f.seek(0, os.SEEK_END)
        start, data = end, b""
        # One newline more than the lines wanted: the first of them may be cut.
        while start > 0 and data.count(b"\n") <= lines and end - start < MAX_TAIL_BYTES:
            step = min(_BLOCK, start, MAX_TAIL_BYTES - (end - start))
            start -= step
            f.seek(start)
            data = f.read(step) + data
    kept = b"".join(data.splitlines(keepends=True)[-lines:]) if lines else b""
    return kept[-MAX_TAIL_BYTES:].decode(errors="replace")


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
        parts = []
        for label, path in output_paths(job):
            parts.append((label, await asyncio.to_thread(tail_file, Path(path), lines) or ""))
        return combine(parts)


class SshLogs:
    """`tail -n N` of the job's files, run on the login node."""

    def __init__(self, ssh: "SshConnection"):
        self.ssh = ssh

    async def tail(self, job: SlurmJob, lines: int) -> str | None:
        parts = []
        for label, path in output_paths(job):
            # The path quoted by shlex never becomes shell syntax; tail -c bounds one endless line.
            line = f"tail -n {bounded(lines)} -- {shlex.quote(path)} | tail -c {MAX_TAIL_BYTES}"
            done = await self.ssh.run(line, timeout=20)
            parts.append((label, done.stdout if done.exit_status == 0 else ""))
        return combine(parts)
