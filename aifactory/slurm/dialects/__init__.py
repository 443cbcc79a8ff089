"""One adapter per slurmrestd dialect: builds request bodies and reads answers into the internal job model.

Three dialects cover the job endpoints: v0.0.38, v0.0.39 and the v0.0.40-v0.0.45 family.
Nothing above this package knows which version it talks to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aifactory.slurm.jobs import JobRequest, SlurmJob
from aifactory.slurm.nodes import SlurmNode


class Dialect(Protocol):
    version: str

    def submit_body(self, request: JobRequest) -> dict[str, Any]: ...

    def submitted_job_id(self, answer: dict[str, Any]) -> str: ...

    def jobs(self, answer: dict[str, Any], keep: Callable[[dict[str, Any]], bool] | None = None
             ) -> list[SlurmJob]: ...

    def last_update(self, answer: dict[str, Any]) -> int | None: ...

    def update_time(self, since: int, now: int) -> str: ...

    def auth_refused(self, status: int, answer: Any) -> bool: ...

    def node_address(self, answer: dict[str, Any]) -> str | None: ...

    def nodes(self, answer: dict[str, Any]) -> list[SlurmNode]: ...


def errors_of(answer: dict[str, Any]) -> list[str]:
    """Slurm's own error texts from any dialect's `errors` list."""
    texts = []
    for err in answer.get("errors") or []:
        if isinstance(err, dict):
            text = err.get("description") or err.get("error") or ""
            detail = err.get("error") if err.get("description") and err.get("error") != text else ""
            texts.append(f"{text} ({detail})" if detail else text)
        else:
            texts.append(str(err))
    return [t for t in texts if t]


def warnings_of(answer: dict[str, Any]) -> list[str]:
    return [w.get("description") or "" if isinstance(w, dict) else str(w) for w in answer.get("warnings") or []]


# Newest first: detection picks the first one the server serves.
SUPPORTED = ("v0.0.45", "v0.0.44", "v0.0.43", "v0.0.42", "v0.0.41", "v0.0.40", "v0.0.39", "v0.0.38")


def dialect_for(version: str) -> Dialect:
    from aifactory.slurm.dialects.v0038 import V0038
    from aifactory.slurm.dialects.v0039 import V0039
    from aifactory.slurm.dialects.v0040 import FAMILY, V0040Family

    if version == "v0.0.38":
        return V0038()
    if version == "v0.0.39":
        return V0039()
    if version in FAMILY:
        return V0040Family(version)
    raise ValueError(f"slurmrestd API {version} is not supported (supported: {', '.join(SUPPORTED)})")


def newest_served(paths: list[str] | dict[str, Any]) -> str | None:
    """The newest supported job API among the paths a server lists at /openapi/v3."""
    served = {p.split("/")[2] for p in paths if p.startswith("/slurm/v") and p.count("/") >= 3}
    return next((v for v in SUPPORTED if v in served), None)
