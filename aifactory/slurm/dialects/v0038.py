"""slurmrestd v0.0.38 (Slurm 22.05 to 23.11)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aifactory.slurm.dialects.common import job_from_answer, node_address, node_from_answer, plain_int, wait_status
from aifactory.slurm.jobs import JobRequest, SlurmJob
from aifactory.slurm.nodes import SlurmNode


class V0038:
    version = "v0.0.38"

    def submit_body(self, request: JobRequest) -> dict[str, Any]:
        job: dict[str, Any] = {
            "name": request.name,
            # v0.0.38 wants an object and slurmctld refuses a batch job without any environment.
            "environment": dict(request.environment) or {"AIFACTORY": "1"},
            "current_working_directory": request.working_directory,
        }
        optional = {
            # No path: Slurm's default (slurm-%j.out in the working directory).
            "standard_output": request.standard_output or None,
            "standard_error": request.standard_error or None,
            "comment": request.comment or None,
            "partition": request.partition,
            "account": request.account,
            "qos": request.qos,
            "cpus_per_task": request.cpus_per_task,
            "memory_per_node": request.memory_per_node_mb,
            "time_limit": request.time_limit_minutes,
            "nodes": request.nodes,
            "gres": f"gpu:{request.gpus_per_node}" if request.gpus_per_node else None,
            "nodelist": request.nodelist,  # 22.05 refuses `required_nodes` ("Disabled key")
        }
        job.update({k: v for k, v in optional.items() if v is not None})
        # v0.0.38 rejects `script` inside `job`: it goes at the top level.
        return {"job": job, "script": request.script}

    def submitted_job_id(self, answer: dict[str, Any]) -> str:
        return str(answer["job_id"])

    def jobs(self, answer: dict[str, Any], keep: Callable[[dict[str, Any]], bool] | None = None
             ) -> list[SlurmJob]:
        return [self._job(raw) for raw in answer.get("jobs") or [] if keep is None or keep(raw)]

    def last_update(self, answer: dict[str, Any]) -> int | None:
        return None  # v0.0.38 does not say; the poller uses its own clock

    def update_time(self, since: int, now: int) -> str:
        return str(since)

    def auth_refused(self, status: int, answer: Any) -> bool:
        # 22.05 answers a bad or expired token with 500 and only "Unspecified error" (slurmctld's jwt_decode
        # failed); a refusal for any other reason carries its own words.
        if status == 401:
            return True
        errors = answer.get("errors") if isinstance(answer, dict) else None
        return status == 500 and bool(errors) and all(
            isinstance(e, dict) and e.get("error_number") == -1 and e.get("error") == "Unspecified error"
            for e in errors)

    def _job(self, raw: dict[str, Any]) -> SlurmJob:
        exit_code, signal = wait_status(plain_int(raw.get("exit_code")))
        return job_from_answer(raw, state=(raw.get("job_state") or "UNKNOWN").upper(), exit_code=exit_code,
                               signal=signal)

    def node_address(self, answer: dict[str, Any]) -> str | None:
        return node_address(answer)

    def nodes(self, answer: dict[str, Any]) -> list[SlurmNode]:
        # 22.05: `state` is the base state in lower case ("idle"), the flags ("DRAIN", ...) are in `state_flags`.
        return [node_from_answer(raw, state=(raw.get("state") or "unknown").upper(),
                                 flags=tuple(f.upper() for f in raw.get("state_flags") or ()))
                for raw in answer.get("nodes") or []]
