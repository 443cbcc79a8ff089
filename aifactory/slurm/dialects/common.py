"""Value shapes shared by several slurmrestd dialects."""

from __future__ import annotations

from typing import Any


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
