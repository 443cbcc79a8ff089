"""From a SlurmCluster spec to a bridge: the one place that picks the transport and the token source."""

from __future__ import annotations

from typing import Awaitable, Callable

from aifactory.models import SecretKeyRef, SlurmClusterSpec
from aifactory.slurm.bridge import SlurmBridge
from aifactory.slurm.rest import RestBridge
from aifactory.slurm.tokens import StaticToken

SecretReader = Callable[[SecretKeyRef], Awaitable[str]]


async def bridge_for(spec: SlurmClusterSpec, read_secret: SecretReader) -> SlurmBridge:
    if spec.token_secret_ref:
        ref = spec.token_secret_ref

        async def reload() -> str:
            return await read_secret(ref)

        tokens = StaticToken(await reload(), reload)
    else:
        tokens = StaticToken("")
    return RestBridge(spec.url, spec.user, tokens, api_version=spec.api_version, local_logs=spec.local_logs)
