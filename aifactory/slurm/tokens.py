"""Where a slurmrestd JWT comes from. Tokens are never logged or shown: only their source is named."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Awaitable, Callable, Protocol

from aifactory.slurm.errors import SlurmAuthError

if TYPE_CHECKING:
    from aifactory.slurm.ssh import SshConnection


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


def parse_scontrol_token(output: str) -> str:
    """The JWT from `scontrol token` output (a line SLURM_JWT=...)."""
    for line in output.splitlines():
        if line.startswith("SLURM_JWT="):
            value = line.split("=", 1)[1].strip()
            if value:
                return value
    raise SlurmAuthError("scontrol token printed no SLURM_JWT line")


class MintedToken:
    """Tokens minted with `scontrol token` on the login node, renewed `renew_before` seconds before they expire.

    `username=` is passed only when the Slurm user differs from the SSH user (only SlurmUser/root may do that).
    """

    def __init__(self, ssh: "SshConnection", *, lifespan: int = 1800, renew_before: int = 300,
                 username: str | None = None, environment: dict[str, str] | None = None, prefix: str = "",
                 clock: Callable[[], float] = time.time):
        self.ssh = ssh
        self.lifespan = lifespan
        self.renew_before = min(renew_before, lifespan // 2)
        self.username = username
        self.environment = environment or {}
        self.prefix = prefix
        self.minted = 0
        self._clock = clock
        self._value: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"MintedToken(via SSH {self.ssh.target.where}, lifespan={self.lifespan}s, ***)"

    async def token(self) -> str:
        async with self._lock:
            if self._value is None or self._clock() >= self._expires - self.renew_before:
                await self._mint()
            return self._value  # type: ignore[return-value]

    async def renew(self) -> str:
        async with self._lock:
            await self._mint()
            return self._value  # type: ignore[return-value]

    async def _mint(self) -> None:
        argv = ["scontrol", "token", f"lifespan={int(self.lifespan)}"]
        if self.username:
            argv.insert(2, f"username={self.username}")
        started = self._clock()
        done = await self.ssh.run(argv, environment=self.environment, prefix=self.prefix, timeout=30)
        if done.exit_status != 0:
            # scontrol's own words (e.g. token creation disabled, lifespan over max_token_lifespan); no token here.
            raise SlurmAuthError(f"scontrol token failed on {self.ssh.target.host}: "
                                 f"{done.stderr.strip() or done.stdout.strip()}")
        self._value = parse_scontrol_token(done.stdout)
        self._expires = started + self.lifespan
        self.minted += 1
