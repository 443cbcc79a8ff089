"""Value shapes shared by several slurmrestd dialects."""

from __future__ import annotations

from typing import Any

from aifactory.slurm.jobs import SlurmJob
from aifactory.slurm.nodes import SlurmNode, parse_gpus


def plain_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def number(value: Any) -> int | None:
    """An integer from either a plain int or v0.0.39+'s {set, infinite, number} (None when unset or infinite)."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        return plain_int(value.get("number"))
    return plain_int(value)


def set_number(value: int) -> dict[str, Any]:
    """v0.0.39+'s way of saying "this number is given"."""
    return {"set": True, "infinite": False, "number": value}


def wait_status(status: int | None) -> tuple[int | None, int | None]:
    """A raw wait(2) status -> (return code, signal): return code in the high byte, signal in the low bits."""
    if status is None:
        return None, None
    return (status >> 8) & 0xFF, (status & 0x7F) or None


def nodes_of(raw: dict[str, Any]) -> str:
    """The job's node list: top-level `nodes`, else job_resources.nodes (a string, or an object from v0.0.41)."""
    if raw.get("nodes"):
        return raw["nodes"]
    resources = raw.get("job_resources") or {}
    nodes = resources.get("nodes")
    if isinstance(nodes, dict):
        return nodes.get("list") or ""
    return nodes or ""


def job_from_answer(raw: dict[str, Any], *, state: str, exit_code: int | None, signal: int | None,
                    flags: tuple[str, ...] = ()) -> SlurmJob:
    """The fields every dialect names alike; the caller reads the ones that differ (state, exit code)."""
    return SlurmJob(
        job_id=str(raw.get("job_id")),
        name=raw.get("name") or "",
        state=state,
        flags=flags,
        reason=raw.get("state_reason") or "",
        batch_host=raw.get("batch_host") or "",
        nodes=nodes_of(raw),
        exit_code=exit_code,
        signal=signal,
        submit_time=number(raw.get("submit_time")),
        start_time=number(raw.get("start_time")) or None,
        end_time=number(raw.get("end_time")) or None,
        comment=raw.get("comment") or "",
        standard_output=raw.get("standard_output") or "",
        standard_error=raw.get("standard_error") or "",
        working_directory=raw.get("current_working_directory") or "",
    )


def node_address(answer: dict[str, Any]) -> str | None:
    """A GET /node/{name} answer -> the node's address (NodeAddr), else its host name."""
    nodes = answer.get("nodes") or []
    return (nodes[0].get("address") or nodes[0].get("hostname")) if nodes else None


NO_VALUE = 0xFFFFFFFE  # Slurm's NO_VAL; NO_VAL64 and INFINITE are larger still


def measured(value: Any) -> int | None:
    """A number Slurm may not know (free memory, load): None for unset, NO_VAL, INFINITE or negative."""
    found = number(value)
    return found if found is not None and 0 <= found < NO_VALUE else None


def node_from_answer(raw: dict[str, Any], *, state: str, flags: tuple[str, ...]) -> SlurmNode:
    """The node fields every dialect names alike; the caller reads the state, whose shape differs."""
    free = raw["free_mem"] if "free_mem" in raw else raw.get("free_memory")  # free_mem from v0.0.39
    load = measured(raw.get("cpu_load"))  # hundredths
    reason = raw.get("reason") or ""
    return SlurmNode(
        name=raw.get("name") or "",
        state=state,
        flags=flags,
        address=raw.get("address") or raw.get("hostname") or "",
        partitions=tuple(raw.get("partitions") or ()),
        cpus=plain_int(raw.get("cpus")) or 0,
        cpus_allocated=plain_int(raw.get("alloc_cpus")) or 0,
        cpu_load=load / 100 if load is not None else None,
        memory_mb=measured(raw.get("real_memory")) or 0,
        memory_free_mb=measured(free),
        memory_allocated_mb=measured(raw.get("alloc_memory")) or 0,
        gpus=parse_gpus(raw.get("gres"), raw.get("gres_used")),
        boot_time=measured(raw.get("boot_time")) or None,
        slurmd_start_time=measured(raw.get("slurmd_start_time")) or None,
        reason=reason,
        reason_time=(measured(raw.get("reason_changed_at")) or None) if reason else None,
    )
