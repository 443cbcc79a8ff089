"""Reading the tail of a job's output files."""

from __future__ import annotations

from collections import deque
from pathlib import Path


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
