"""slurmrestd v0.0.39 (Slurm 23.02 to 24.05): script inside `job`, environment as a list, {set, number} values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aifactory.slurm.dialects.common import (
    job_from_answer, node_address, node_from_answer, number, set_number, wait_status,
)
from aifactory.slurm.jobs import JobRequest, SlurmJob
from aifactory.slurm.nodes import SlurmNode


def environment_list(environment: dict[str, str]) -> list[str]:
    # slurmctld refuses a batch job without any environment, in every version.
    return [f"{k}={v}" for k, v in environment.items()] or ["AIFACTORY=1"]


class V0039:
    version = "v0.0.39"
    # The canonical GPU TRES string: "gres:gpu:N" up to 23.02, "gres/gpu:N" from 23.11 (v0.0.40+).
    gpu_tres = "gres:gpu:{}"

    def submit_body(self, request: JobRequest) -> dict[str, Any]:
        job: dict[str, Any] = {
            "name": request.name,
            "script": request.script,
            "environment": environment_list(request.environment),
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
            "memory_per_node": set_number(request.memory_per_node_mb) if request.memory_per_node_mb else None,
            "time_limit": set_number(request.time_limit_minutes) if request.time_limit_minutes else None,
            "minimum_nodes": request.nodes,
            "maximum_nodes": request.nodes,
            "tres_per_node": self.gpu_tres.format(request.gpus_per_node) if request.gpus_per_node else None,
            "required_nodes": [request.nodelist] if request.nodelist else None,
        }
        job.update({k: v for k, v in optional.items() if v is not None})
        return {"job": job}

    def submitted_job_id(self, answer: dict[str, Any]) -> str:
        return str(answer["job_id"])

    def jobs(self, answer: dict[str, Any], keep: Callable[[dict[str, Any]], bool] | None = None
             ) -> list[SlurmJob]:
        return [self._job(raw) for raw in answer.get("jobs") or [] if keep is None or keep(raw)]

    def last_update(self, answer: dict[str, Any]) -> int | None:
        return number(answer.get("last_update"))

    def update_time(self, since: int, now: int) -> str:
        return str(since)

    def auth_refused(self, status: int, answer: Any) -> bool:
        # 401 without a token; 24.11 on answer a bad, expired or other user's token with 511 (error 1007).
        return status in (401, 511)

    def state(self, raw: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
        return (raw.get("job_state") or "UNKNOWN").upper(), ()

    def exit_status(self, raw: dict[str, Any]) -> tuple[int | None, int | None]:
        # Still the raw wait(2) status, now wrapped in {set, infinite, number}.
        return wait_status(number(raw.get("exit_code")))

    def _job(self, raw: dict[str, Any]) -> SlurmJob:
        state, flags = self.state(raw)
        exit_code, signal = self.exit_status(raw)
        return job_from_answer(raw, state=state, flags=flags, exit_code=exit_code, signal=signal)

    def node_address(self, answer: dict[str, Any]) -> str | None:
        return node_address(answer)

    def nodes(self, answer: dict[str, Any]) -> list[SlurmNode]:
        # From 23.02 `state` is one list: the base state first, then the flags (["IDLE", "DRAIN"]).
        nodes = []
        for raw in answer.get("nodes") or []:
            states = raw.get("state") or ["UNKNOWN"]
            if isinstance(states, str):
                states = [states]
            nodes.append(node_from_answer(raw, state=states[0].upper(), flags=tuple(s.upper() for s in states[1:])))
        return nodes
