"""The one internal model of Slurm nodes, and the cache every reader of a cluster's nodes goes through.

A cluster's nodes are read with one request for all of them (GET /nodes, or `scontrol show node --json`), at most
once per `SlurmCluster.spec.nodePollIntervalSeconds` in each process that reads them, and only while someone reads
them: the operator (for the SlurmCluster's node summary) and the REST API (for the pages and faces that show
nodes). Never one request per node or per API call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from aifactory.slurm.errors import SlurmError

if TYPE_CHECKING:
    from aifactory.slurm.bridge import SlurmBridge

log = logging.getLogger(__name__)

# Base states and flags of a node that cannot take a new job (sinfo's down, drained, draining, powered off, ...).
UNAVAILABLE_STATES = frozenset({"DOWN", "FUTURE", "UNKNOWN"})
UNAVAILABLE_FLAGS = frozenset({
    "DRAIN", "DRAINED", "DRAINING", "NOT_RESPONDING", "FAIL", "POWERED_DOWN", "POWER_DOWN", "POWERING_DOWN",
    "POWERING_UP", "REBOOT_ISSUED", "INVALID_REG", "MAINTENANCE",
})
# A node slurmctld hears from: not down, not marked NOT_RESPONDING (its last contact is the read that saw this).
SILENT_FLAGS = frozenset({"NOT_RESPONDING", "POWERED_DOWN", "POWER_DOWN"})


@dataclass(frozen=True)
class GpuGres:
    """GPUs of one GRES type on a node: `gpu:a100:4` is type a100, 4 in total."""

    type: str | None  # None for untyped `gpu:4`
    total: int
    used: int = 0

    @property
    def free(self) -> int:
        return max(0, self.total - self.used)


@dataclass(frozen=True)
class SlurmNode:
    """A node as slurmctld last reported it. Memory in MiB, times as Unix seconds."""

    name: str
    state: str = "UNKNOWN"  # base state: IDLE, MIXED, ALLOCATED, DOWN, ...
    flags: tuple[str, ...] = ()  # DRAIN, NOT_RESPONDING, RESERVED, ...
    address: str = ""
    partitions: tuple[str, ...] = ()
    cpus: int = 0
    cpus_allocated: int = 0
    cpu_load: float | None = None  # load average, as Slurm reports it
    memory_mb: int = 0
    memory_free_mb: int | None = None  # what the node's OS reports free
    memory_allocated_mb: int = 0  # what jobs hold
    gpus: tuple[GpuGres, ...] = ()
    boot_time: int | None = None
    slurmd_start_time: int | None = None
    reason: str = ""  # why the node is down or drained (Slurm's words)
    reason_time: int | None = None
    last_contact: float | None = None  # the last read in which slurmctld said the node was responding

    @property
    def state_text(self) -> str:
        """sinfo-like: IDLE, MIXED+DRAIN, DOWN+NOT_RESPONDING."""
        return "+".join((self.state, *self.flags))

    @property
    def available(self) -> bool:
        """Whether the node can take a new job (not down, drained, failing, powered off or not responding)."""
        return self.state not in UNAVAILABLE_STATES and not UNAVAILABLE_FLAGS.intersection(self.flags)

    @property
    def responding(self) -> bool:
        return self.state not in ("DOWN", "FUTURE", "UNKNOWN") and not SILENT_FLAGS.intersection(self.flags)

    @property
    def gpu_count(self) -> int:
        return sum(g.total for g in self.gpus)

    @property
    def gpus_used(self) -> int:
        return sum(min(g.used, g.total) for g in self.gpus)


@dataclass(frozen=True)
class NodeSummary:
    """What `kubectl get slc` shows of a cluster's nodes."""

    total: int
    up: int
    gpus: int
    gpus_free: int  # GPUs of available nodes not held by a job


def summarize(nodes: Iterable[SlurmNode]) -> NodeSummary:
    nodes = list(nodes)
    up = [n for n in nodes if n.available]
    return NodeSummary(total=len(nodes), up=len(up), gpus=sum(n.gpu_count for n in nodes),
                       gpus_free=sum(n.gpu_count - n.gpus_used for n in up))


_GRES_ITEM = re.compile(r"^(?P<name>[^:()]+)(?::(?P<type>[^:()]+))?(?::(?P<count>\d+)[KMG]?)?(?:\(.*\))?$")


def _split_gres(text: str) -> list[str]:
    """`gpu:a100:2(S:0-1),mps:100` -> items; commas inside parentheses (IDX:0,2) stay in their item."""
    items, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    return [i.strip() for i in items if i.strip() and i.strip() not in ("(null)", "N/A")]


def _gpu_counts(text: str | None) -> dict[str | None, int]:
    """GPU counts by type from a GRES string; `gpu:2` (no type) and `gpu:a100:2` alike. Other GRES are left out."""
    counts: dict[str | None, int] = {}
    for item in _split_gres(text or ""):
        m = _GRES_ITEM.match(item)
        if not m or m.group("name") != "gpu":
            continue
        kind, count = m.group("type"), m.group("count")
        if kind is not None and count is None and kind.isdigit():
            kind, count = None, kind  # `gpu:2`: the second field is the count
        counts[kind] = counts.get(kind, 0) + (int(count) if count is not None else 1)
    return counts


def parse_gpus(gres: str | None, gres_used: str | None) -> tuple[GpuGres, ...]:
    """A node's GPUs from Slurm's `gres` and `gres_used` strings (same format in every version)."""
    total, used = _gpu_counts(gres), _gpu_counts(gres_used)
    if not total:
        return ()
    untyped_used = used.pop(None, 0)
    gpus = []
    for kind, count in total.items():
        taken = used.get(kind, 0)
        if untyped_used and taken < count:  # a used count without type: spread it over the types in order
            extra = min(count - taken, untyped_used)
            taken, untyped_used = taken + extra, untyped_used - extra
        gpus.append(GpuGres(type=kind, total=count, used=taken))
    return tuple(gpus)


@dataclass
class NodeList:
    """The answer readers get: the nodes of the last good read, when it was made, and the last error if any."""

    nodes: list[SlurmNode] = field(default_factory=list)
    read_at: float | None = None  # time.time() of the last good read
    error: str | None = None  # the last read's failure, in Slurm's words (the nodes are then the previous ones)

    def node(self, name: str) -> SlurmNode | None:
        return next((n for n in self.nodes if n.name == name), None)

    @property
    def summary(self) -> NodeSummary:
        return summarize(self.nodes)


class NodeCache:
    """A cluster's nodes, read with one request for all of them, at most once per `interval` seconds.

    Concurrent readers share one read in flight; a failed read is not retried before the interval is over
    either (the previous nodes stay, with the error).
    """

    def __init__(self, bridge: SlurmBridge, interval: float):
        self.bridge = bridge
        self.interval = interval
        self.reads = 0
        self._list = NodeList()
        self._tried_at: float | None = None  # monotonic
        self._lock = asyncio.Lock()
        self._last_contact: dict[str, float] = {}

    @property
    def known(self) -> NodeList:
        """What the last read gave, without reading."""
        return self._list

    def due(self) -> bool:
        return self._tried_at is None or time.monotonic() - self._tried_at >= self.interval

    async def current(self) -> NodeList:
        """The nodes, read now if the last read is older than the interval."""
        if self._lock.locked() or self.due():  # a read in flight is waited for, not started again
            async with self._lock:
                if self.due():
                    await self._read()
        return self._list

    async def _read(self) -> None:
        self._tried_at = time.monotonic()
        self.reads += 1
        try:
            nodes = await self.bridge.nodes()
        except SlurmError as exc:
            log.warning("reading the nodes through %r failed: %s", self.bridge, exc)
            self._list = replace(self._list, error=str(exc))
            return
        now = time.time()
        for node in nodes:
            if node.responding:
                self._last_contact[node.name] = now
        self._list = NodeList(
            nodes=[replace(n, last_contact=self._last_contact.get(n.name)) for n in nodes], read_at=now, error=None)
