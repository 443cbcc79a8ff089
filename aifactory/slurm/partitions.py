"""Slurm partitions in one internal model, from slurmrestd's answers (every dialect) and `scontrol show partition`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SlurmPartition:
    """What a preflight check needs of a partition. None: no limit (or Slurm did not say)."""

    name: str
    state: str = "UP"
    default: bool = False
    nodes: str = ""  # Slurm's node list expression
    total_nodes: int | None = None
    total_cpus: int | None = None
    max_time_minutes: int | None = None
    max_nodes_per_job: int | None = None
    max_memory_per_node_mb: int | None = None
    allowed_accounts: tuple[str, ...] | None = None  # None: all
    denied_accounts: tuple[str, ...] = ()
    allowed_qos: tuple[str, ...] | None = None
    denied_qos: tuple[str, ...] = ()


def _names(value: Any) -> tuple[str, ...] | None:
    """A comma-separated list (or a list); None for "all" (empty or ALL)."""
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = [v.strip() for v in str(value or "").split(",")]
    items = [i for i in items if i]
    return None if not items or items == ["ALL"] else tuple(items)


def _limit(value: Any) -> int | None:
    """-1, null, "UNLIMITED", an infinite {set, infinite, number} or an unset one: no limit."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, str):
        value = int(value) if value.isdigit() else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def from_rest(raw: dict[str, Any]) -> SlurmPartition:
    """One entry of slurmrestd's `partitions`: flat fields up to v0.0.38 (max_time_limit, allowed_accounts, ...),
    nested ones from v0.0.39 (partition.state, maximums.time, accounts.allowed, nodes.total, ...)."""
    nested = isinstance(raw.get("nodes"), dict) or "maximums" in raw
    if not nested:
        flags = [str(f).lower() for f in raw.get("flags") or ()]
        return SlurmPartition(
            name=raw.get("name") or "", state=str(raw.get("state") or "UP").upper(), default="default" in flags,
            nodes=raw.get("nodes") or "", total_nodes=_limit(raw.get("total_nodes")),
            total_cpus=_limit(raw.get("total_cpus")), max_time_minutes=_limit(raw.get("max_time_limit")),
            max_nodes_per_job=_limit(raw.get("maximum_nodes_per_job")),
            max_memory_per_node_mb=_limit(raw.get("maximum_memory_per_node")),
            allowed_accounts=_names(raw.get("allowed_accounts")), denied_accounts=_names(raw.get("denied_accounts"))
            or (), allowed_qos=_names(raw.get("allowed_qos")), denied_qos=_names(raw.get("denied_qos")) or ())
    part = raw.get("partition") or {}
    state = part.get("state") or ["UP"]
    state = state[0] if isinstance(state, list) and state else state
    maxima = raw.get("maximums") or {}
    nodes = raw.get("nodes") or {}
    accounts = raw.get("accounts") or {}
    qos = raw.get("qos") or {}
    defaults = raw.get("defaults") or {}
    default_flag = "DEFAULT" in [str(f).upper() for f in (defaults.get("job") or [])] or \
        "DEFAULT" in [str(f).upper() for f in (raw.get("flags") or [])]
    return SlurmPartition(
        name=raw.get("name") or "", state=str(state or "UP").upper(), default=default_flag,
        nodes=nodes.get("configured") or "", total_nodes=_limit(nodes.get("total")),
        total_cpus=_limit((raw.get("cpus") or {}).get("total")), max_time_minutes=_limit(maxima.get("time")),
        max_nodes_per_job=_limit(maxima.get("nodes")), max_memory_per_node_mb=_limit(maxima.get("memory_per_node")),
        allowed_accounts=_names(accounts.get("allowed")), denied_accounts=_names(accounts.get("deny")) or (),
        allowed_qos=_names(qos.get("allowed")), denied_qos=_names(qos.get("deny")) or ())


def _minutes(text: str) -> int | None:
    """scontrol's MaxTime: UNLIMITED, [days-]hours:minutes:seconds, minutes:seconds or minutes."""
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "NONE"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":") if p.isdigit()]
    if len(parts) == 3:
        minutes = parts[0] * 60 + parts[1] + (1 if parts[2] else 0)
    elif len(parts) == 2:
        minutes = parts[0] + (1 if parts[1] else 0)
    elif len(parts) == 1:
        minutes = parts[0]
    else:
        return None
    return minutes + (int(days) * 24 * 60 if days.isdigit() else 0)


def from_scontrol(line: str) -> SlurmPartition:
    """One line of `scontrol show partition --oneliner`."""
    fields = dict(re.findall(r"(\w+)=(\S*)", line))

    def number(key: str) -> int | None:
        value = fields.get(key, "")
        return int(value) if value.isdigit() else None

    memory = fields.get("MaxMemPerNode", "")
    return SlurmPartition(
        name=fields.get("PartitionName", ""), state=fields.get("State", "UP").upper(),
        default=fields.get("Default") == "YES", nodes=fields.get("Nodes", ""), total_nodes=number("TotalNodes"),
        total_cpus=number("TotalCPUs"), max_time_minutes=_minutes(fields.get("MaxTime", "")),
        max_nodes_per_job=number("MaxNodes"), max_memory_per_node_mb=int(memory) if memory.isdigit() else None,
        allowed_accounts=_names(fields.get("AllowAccounts")), denied_accounts=_names(fields.get("DenyAccounts")) or (),
        allowed_qos=_names(fields.get("AllowQos")), denied_qos=_names(fields.get("DenyQos")) or ())


def pick_partition(found: list[SlurmPartition], name: str | None) -> SlurmPartition:
    """The named partition, or the default one; Slurm's words when there is none."""
    from aifactory.slurm.errors import SlurmError

    if name:
        match = next((p for p in found if p.name == name), None)
        if match is None:
            raise SlurmError("Invalid partition name specified")
        return match
    default = next((p for p in found if p.default), None) or (found[0] if len(found) == 1 else None)
    if default is None:
        raise SlurmError("No partition specified or system default partition")
    return default
