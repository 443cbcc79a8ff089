"""Who is calling: the identity every face of the API works with, resolved from an API key.

`Authenticator.authenticate` is the one check: headers in, a Principal (or Unauthorized / Throttled) out. It reads
keys from the API's watch cache, so a revoked key stops working as soon as its deletion is watched (milliseconds),
and it records last use in memory (written back to the ApiKey at most once a minute, not per request).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from aifactory.api.identity.keys import key_id_of, key_matches
from aifactory.models import Role

KEY_HELP = ("Send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'. An admin creates keys with "
            "POST /api/api-keys (on the local stack `aifactory dev env` prints an admin key).")


class Unauthorized(Exception):
    """No key, or one that is unknown, revoked or expired (401)."""


class Forbidden(Exception):
    """A valid key without the role or the model the request needs (403)."""


class Throttled(Exception):
    """Too many failed attempts from one client (429)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Principal:
    """A caller: the tenant (namespace) it acts in, its role, and which models it may use."""

    tenant: str
    role: Role
    key_id: str | None = None
    user: str | None = None  # the id of the User owning the key
    allowed_models: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin

    def sees(self, namespace: str) -> bool:
        """Whether resources of this namespace exist for the caller (others are 404, not 403)."""
        return self.is_admin or namespace == self.tenant

    def require(self, role: Role) -> None:
        if not self.role.includes(role):
            raise Forbidden(f"This API key has the role {self.role.value}; this path needs {role.value}.")

    def may_use_model(self, *names: str) -> bool:
        """With allowed_models set, one of a service's names (its name, its served model ids) must be listed."""
        return not self.allowed_models or any(n in self.allowed_models for n in names if n)


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def principal_of(key_object: dict) -> Principal:
    """The Principal an ApiKey resource describes (its namespace is its tenant)."""
    spec = key_object.get("spec") or {}
    meta = key_object.get("metadata") or {}
    return Principal(tenant=meta.get("namespace") or "", role=Role(spec.get("role") or Role.inference.value),
                     key_id=meta.get("name"), user=spec.get("owner"),
                     allowed_models=tuple(spec.get("allowedModels") or ()))


@dataclass
class FailureThrottle:
    """At most `limit` failed authentications per client in `window` seconds; beyond that, 429 until it passes.
    Only failures count: a valid key always gets through."""

    limit: int = 20
    window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque] = field(default_factory=dict)

    def failed(self, client: str) -> int | None:
        """Record a failure; the seconds to wait when the client is over the limit, else None."""
        now = self.clock()
        seen = self._failures.setdefault(client, deque())
        while seen and now - seen[0] > self.window:
            seen.popleft()
        seen.append(now)
        if len(self._failures) > 10_000:  # forget the quiet ones rather than grow without bound
            for other in [c for c, d in self._failures.items() if not d or now - d[-1] > self.window]:
                del self._failures[other]
        if len(seen) > self.limit:
            return max(1, int(self.window - (now - seen[0])) + 1)
        return None


class Authenticator:
    """Resolves the API key of a request against the ApiKey resources the API watches."""

    def __init__(self, find_key: Callable[[str], dict | None], *, throttle: FailureThrottle | None = None,
                 clock: Callable[[], float] = time.time):
        self._find_key = find_key
        self.throttle = throttle or FailureThrottle()
        self._clock = clock
        self.last_used: dict[str, float] = {}  # key id -> when, flushed to the ApiKeys now and then

    def authenticate(self, authorization: str | None, x_api_key: str | None, client: str) -> Principal:
        key = presented_key(authorization, x_api_key)
        if not key:
            self._fail(client, "Missing API key.")
        key_id = key_id_of(key)
        found = self._find_key(key_id) if key_id else None
        stored = ((found or {}).get("spec") or {}).get("keyHash")
        if not key_matches(key, stored):  # also when nothing was found: the same comparison, the same time
            self._fail(client, "Unknown or revoked API key.")
        assert found is not None and key_id is not None
        expires = parse_time((found.get("spec") or {}).get("expiresAt"))
        now = self._clock()
        if expires is not None and now >= expires:
            self._fail(client, "This API key has expired.")
        self.last_used[key_id] = now
        return principal_of(found)

    def _fail(self, client: str, why: str) -> None:
        wait = self.throttle.failed(client)
        if wait is not None:
            raise Throttled(f"Too many failed authentications from {client}; try again in {wait}s.", wait)
        raise Unauthorized(f"{why} {KEY_HELP}")


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key of `Authorization: Bearer <key>` or `X-API-Key: <key>` (both forms work everywhere)."""
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None
