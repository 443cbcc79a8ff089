"""What the gateway saw of each service and each key: the last request, requests in flight, tokens.

Kept in memory on the hot path (a few dict updates per request, no Kubernetes call) and written back by a
background task: a service's `status.lastRequest` and `status.usage` at most once a minute (or every quarter of its
idle timeout when that is shorter, so that idle shutdown stays on time), a key's `status.usage` once a minute.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from aifactory.lifecycle import last_use_resolution, parse_rfc3339, ready_since

ServiceKey = tuple[str, str]  # (namespace, name)


@dataclass
class Tally:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, requests: int, prompt: int, completion: int) -> None:
        self.requests += requests
        self.prompt_tokens += prompt
        self.completion_tokens += completion

    def over(self, stored: dict | None) -> dict:
        """This tally added to a stored `usage` (camelCase, as in a status)."""
        stored = stored or {}
        return {"requests": int(stored.get("requests") or 0) + self.requests,
                "promptTokens": int(stored.get("promptTokens") or 0) + self.prompt_tokens,
                "completionTokens": int(stored.get("completionTokens") or 0) + self.completion_tokens}


def key_of(obj: dict) -> ServiceKey:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


class Traffic:
    def __init__(self) -> None:
        self.last_request: dict[ServiceKey, float] = {}  # wall clock, as the status records it
        self.in_flight: Counter[ServiceKey] = Counter()
        self.services: dict[ServiceKey, Tally] = {}  # since this process started (for /metrics)
        self.keys: dict[tuple[str, str], Tally] = {}  # (tenant, key id)
        self.unwritten_services: dict[ServiceKey, Tally] = {}
        self.unwritten_keys: dict[str, Tally] = {}
        self.written_at: dict[ServiceKey, float] = {}  # monotonic

    # ---- the hot path ---------------------------------------------------------------------------------------

    def begin(self, service: ServiceKey) -> None:
        self.in_flight[service] += 1
        self.last_request[service] = time.time()

    def end(self, service: ServiceKey, tenant: str, key_id: str | None, prompt: int = 0, completion: int = 0) -> None:
        self.in_flight[service] -= 1
        if self.in_flight[service] <= 0:
            del self.in_flight[service]
        self.last_request[service] = time.time()
        for tallies, key in ((self.services, service), (self.unwritten_services, service)):
            (tallies.get(key) or tallies.setdefault(key, Tally())).add(1, prompt, completion)
        if key_id:
            for tallies, key in ((self.keys, (tenant, key_id)), (self.unwritten_keys, key_id)):
                (tallies.get(key) or tallies.setdefault(key, Tally())).add(1, prompt, completion)

    # ---- reading ---------------------------------------------------------------------------------------------

    def last_use(self, obj: dict) -> float:
        """When the service was last used: seen here, recorded in its status, or when it became ready."""
        status = obj.get("status") or {}
        candidates = [self.last_request.get(key_of(obj)), parse_rfc3339(status.get("lastRequest")),
                      ready_since(status.get("conditions")),
                      parse_rfc3339((obj.get("metadata") or {}).get("creationTimestamp"))]
        return max((c for c in candidates if c is not None), default=0.0)

    def key_usage(self, key_obj: dict) -> dict:
        """A key's usage: what its status holds plus what this process has not written yet."""
        stored = (key_obj.get("status") or {}).get("usage")
        return self.unwritten_keys.get((key_obj.get("metadata") or {}).get("name", ""), Tally()).over(stored)

    # ---- writing back ----------------------------------------------------------------------------------------

    def services_due(self, idle_timeout_of, now: float | None = None) -> list[ServiceKey]:
        """Services whose use is to be written now: used since the last write, and the last write at least
        last_use_resolution() ago."""
        now = time.monotonic() if now is None else now
        due = []
        for key in list(self.unwritten_services):
            if now - self.written_at.get(key, -1e9) >= last_use_resolution(idle_timeout_of(key)):
                due.append(key)
        return due

    def take_service(self, key: ServiceKey) -> tuple[float | None, Tally]:
        self.written_at[key] = time.monotonic()
        return self.last_request.get(key), self.unwritten_services.pop(key, Tally())

    def untake_service(self, key: ServiceKey, tally: Tally) -> None:
        """A write that failed: its counts wait for the next one."""
        (self.unwritten_services.get(key) or self.unwritten_services.setdefault(key, Tally())).add(
            tally.requests, tally.prompt_tokens, tally.completion_tokens)

    def take_keys(self) -> dict[str, Tally]:
        taken, self.unwritten_keys = self.unwritten_keys, {}
        return taken
