"""slurmrestd v0.0.40 to v0.0.45 (Slurm 23.11 onward): one family with small differences.

Against v0.0.39: job_state is a list (base state first, then flags), exit_code is
{status, return_code, signal}, times are {set, infinite, number}, GPUs are "gres/gpu:N", step_id is a string.
Inside the family, as the real 24.11 and 26.05 answer: job_resources.nodes becomes an object in v0.0.41 (read
by `nodes_of`); the submit answer carries `result` beside `job_id` in v0.0.40 and v0.0.41 only; v0.0.40 and
v0.0.41 refuse an integer `update_time` (422, "Parsing of N for timestamp failed") and take Slurm's relative
form `now-<seconds>`, v0.0.42 on take the integer. None of it changes what is sent for a job.
"""

from __future__ import annotations

from typing import Any

from aifactory.slurm.dialects.common import number
from aifactory.slurm.dialects.v0039 import V0039

FAMILY = ("v0.0.40", "v0.0.41", "v0.0.42", "v0.0.43", "v0.0.44", "v0.0.45")
RELATIVE_UPDATE_TIME = ("v0.0.40", "v0.0.41")


class V0040Family(V0039):
    gpu_tres = "gres/gpu:{}"

    def __init__(self, version: str = "v0.0.40"):
        if version not in FAMILY:
            raise ValueError(f"{version} is not in the v0.0.40 family {FAMILY}")
        self.version = version

    def submitted_job_id(self, answer: dict[str, Any]) -> str:
        job_id = answer.get("job_id")
        if job_id is None:  # v0.0.41+ also answer inside `result`
            job_id = (answer.get("result") or {}).get("job_id")
        return str(job_id)

    def update_time(self, since: int, now: int) -> str:
        if self.version in RELATIVE_UPDATE_TIME:
            # Seconds back from the server's own "now"; the poller's `since` already allows for clock skew.
            return f"now-{max(0, now - since)}"
        return str(since)

    def state(self, raw: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
        states = raw.get("job_state") or ["UNKNOWN"]
        if isinstance(states, str):
            states = [states]
        return states[0].upper(), tuple(s.upper() for s in states[1:])

    def exit_status(self, raw: dict[str, Any]) -> tuple[int | None, int | None]:
        code = raw.get("exit_code")
        if not isinstance(code, dict) or "return_code" not in code and "signal" not in code:
            return super().exit_status(raw)
        if "PENDING" in (code.get("status") or []):
            return None, None
        signal = number((code.get("signal") or {}).get("id"))
        return number(code.get("return_code")), signal or None
