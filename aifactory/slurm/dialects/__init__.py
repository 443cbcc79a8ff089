"""One adapter per slurmrestd dialect: builds request bodies and reads answers into the internal job model.

Nothing above this package knows which version it talks to.
"""

from __future__ import annotations

from typing import Any, Protocol

from aifactory.slurm.jobs import JobRequest, SlurmJob


class Dialect(Protocol):
    version: str

    def submit_body(self, request: JobRequest) -> dict[str, Any]: ...

    def submitted_job_id(self, answer: dict[str, Any]) -> str: ...

    def jobs(self, answer: dict[str, Any]) -> list[SlurmJob]: ...

    def node_address(self, answer: dict[str, Any]) -> str | None: ...


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


def dialect_for(version: str) -> Dialect:
    from aifactory.slurm.dialects.v0038 import V0038

    known: dict[str, Dialect] = {"v0.0.38": V0038()}
    try:
        return known[version]
    except KeyError:
        raise ValueError(f"slurmrestd API {version} is not supported (supported: {', '.join(known)})") from None


SUPPORTED = ("v0.0.38",)
