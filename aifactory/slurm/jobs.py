"""The one internal model of Slurm jobs; every dialect and transport converts to and from it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

# Base states after which a job never runs again.
FINISHED_STATES = frozenset({
    "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
    "OUT_OF_MEMORY", "SPECIAL_EXIT",
})

# Base states of a job still waiting to run.
QUEUED_STATES = frozenset({"PENDING", "REQUEUED"})


@dataclass(frozen=True)
class JobRequest:
    """A batch job to submit, in Slurm's terms but no dialect's."""

    name: str
    script: str
    environment: dict[str, str]
    working_directory: str
    standard_output: str
    standard_error: str
    comment: str = ""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    cpus_per_task: int | None = None
    memory_per_node_mb: int | None = None
    gpus_per_node: int | None = None
    time_limit_minutes: int | None = None
    nodes: int | None = None
    nodelist: str | None = None  # only these nodes (Slurm's nodelist / required nodes)
    user: str | None = None  # run as this Slurm user instead of the cluster's (a tenant's user)


@dataclass(frozen=True)
class SlurmJob:
    """A job as slurmctld last reported it."""

    job_id: str
    name: str = ""
    state: str = "UNKNOWN"  # base state, e.g. PENDING, RUNNING, COMPLETED
    flags: tuple[str, ...] = ()  # further state flags (v0.0.40+: REQUEUED, ...)
    reason: str = ""  # state_reason, e.g. Resources, NonZeroExitCode
    batch_host: str = ""
    nodes: str = ""
    exit_code: int | None = None
    signal: int | None = None
    submit_time: int | None = None
    start_time: int | None = None
    end_time: int | None = None
    comment: str = ""
    standard_output: str = ""
    standard_error: str = ""
    working_directory: str = ""
    vanished: bool = False  # slurmctld no longer lists it; this is the last known state

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def queued(self) -> bool:
        """Waiting in Slurm's queue (held, waiting for resources or priority, or requeued)."""
        return self.state in QUEUED_STATES

    @property
    def expected_start(self) -> int | None:
        """Slurm's estimate of when a queued job starts: its start_time while pending (set by the backfill
        scheduler; 0, read as None, when Slurm gives none, e.g. for a held job)."""
        return self.start_time if self.queued and self.start_time else None

    @cached_property
    def tags(self) -> "JobTags":
        """Parsed once per job object (a poller looks them up often)."""
        return JobTags.parse(self.comment)


@dataclass(frozen=True)
class JobTags:
    """What aifactory keeps in a job's comment: the owning AIService's UID and the stage the job reached.

    The comment is the one field a job can change about itself over pure REST (`scontrol update`).
    """

    uid: str = ""
    stage: str = ""
    port: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    PREFIX = "aifactory"

    @classmethod
    def tagged(cls, comment: str | None) -> bool:
        """Whether a job's comment is aifactory's (cheap: no parsing)."""
        return bool(comment) and comment.startswith(cls.PREFIX)

    @classmethod
    def parse(cls, comment: str | None) -> "JobTags":
        if not comment or not comment.startswith(cls.PREFIX):
            return cls()
        pairs = dict(re.findall(r"(\w+)=(\S+)", comment))
        port = pairs.pop("port", None)
        return cls(uid=pairs.pop("uid", ""), stage=pairs.pop("stage", ""),
                   port=int(port) if port and port.isdigit() else None, extra=pairs)

    def render(self) -> str:
        parts = [self.PREFIX, f"uid={self.uid}"]
        if self.stage:
            parts.append(f"stage={self.stage}")
        if self.port:
            parts.append(f"port={self.port}")
        return " ".join(parts)


def memory_mb(size: str | None) -> int | None:
    """ "32G" -> 32768; Slurm's own suffixes (K, M, G, T), M when none."""
    if not size:
        return None
    m = re.fullmatch(r"(\d+)([KMGT])?i?B?", size.strip(), re.IGNORECASE)
    if not m:
        raise ValueError(f"memory {size!r} is not a size like 512M or 32G")
    value, unit = int(m.group(1)), (m.group(2) or "M").upper()
    factor = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    return max(1, int(value * factor))
