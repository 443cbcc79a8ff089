"""Where a slurmrestd JWT comes from. Tokens are never logged: only their source is named."""

from __future__ import annotations

from typing import Awaitable, Callable, Protocol


class TokenSource(Protocol):
    async def token(self) -> str: ...

    async def renew(self) -> str: ...


class StaticToken:
    """A token read once (for example from a Secret); `renew` re-reads it through `reload` when given."""

    def __init__(self, value: str, reload: Callable[[], Awaitable[str]] | None = None):
        self._value = value
        self._reload = reload

    async def token(self) -> str:
        return self._value

    async def renew(self) -> str:
        if self._reload is not None:
            self._value = await self._reload()
        return self._value

    def __repr__(self) -> str:  # never show the token itself
        return "StaticToken(***)"
