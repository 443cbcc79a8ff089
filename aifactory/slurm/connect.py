"""From a SlurmCluster spec to a bridge: the one place that picks the transport and the token source."""

from __future__ import annotations

from typing import Awaitable, Callable

from aifactory.models import SecretKeyRef, SlurmClusterSpec, Transport
from aifactory.slurm.bridge import SlurmBridge
from aifactory.slurm.cli import CliBridge
from aifactory.slurm.files import LocalFiles, NoFiles, SftpFiles
from aifactory.slurm.logs import LocalLogs, SshLogs
from aifactory.slurm.rest import RestBridge
from aifactory.slurm.ssh import SshConnection, SshTarget
from aifactory.slurm.tokens import MintedToken, StaticToken, TokenSource

SecretReader = Callable[[SecretKeyRef], Awaitable[str]]

# The URL the tunnel's HTTP requests carry when slurmrestd listens on a unix socket (the host is not used).
SOCKET_URL = "http://slurmrestd"


async def ssh_connection(spec: SlurmClusterSpec, read_secret: SecretReader) -> SshConnection:
    ssh = spec.ssh
    assert ssh is not None
    known_hosts = ssh.known_hosts or ""
    if ssh.known_hosts_secret_ref is not None:
        known_hosts = "\n".join(filter(None, [known_hosts, await read_secret(ssh.known_hosts_secret_ref)]))
    target = SshTarget(host=ssh.host, port=ssh.port, user=ssh.user,
                       private_key=await read_secret(ssh.key_secret_ref), known_hosts=known_hosts)
    return SshConnection(target)


async def token_source(spec: SlurmClusterSpec, read_secret: SecretReader,
                       ssh: SshConnection | None) -> TokenSource:
    if spec.token and spec.token.mint:
        assert ssh is not None
        mint = spec.token.mint
        username = spec.user if spec.ssh and spec.user != spec.ssh.user else None
        return MintedToken(ssh, lifespan=mint.lifespan_seconds, renew_before=mint.renew_before_seconds,
                           username=username, environment=spec.cli.environment,
                           prefix=spec.cli.command_prefix or "")
    ref = spec.token_ref
    if ref is None:
        return StaticToken("")

    async def reload() -> str:
        return await read_secret(ref)

    return StaticToken(await reload(), reload)


async def bridge_for(spec: SlurmClusterSpec, read_secret: SecretReader) -> SlurmBridge:
    """The bridge for a cluster. Nothing is contacted here: connections open on first use."""
    ssh = await ssh_connection(spec, read_secret) if spec.ssh is not None else None
    logs = LocalLogs() if spec.local_logs else (SshLogs(ssh) if ssh else None)
    files = LocalFiles() if spec.local_logs else (SftpFiles(ssh) if ssh else NoFiles())
    if spec.transport is Transport.ssh_cli:
        assert ssh is not None
        return CliBridge(ssh, environment=spec.cli.environment, prefix=spec.cli.command_prefix or "",
                         api_version=spec.api_version, logs=logs, files=files)
    tokens = await token_source(spec, read_secret, ssh)
    # Where the login node is reached over SSH, Slurm's commands serve what slurmrestd cannot (sbatch --test-only).
    commands = CliBridge(ssh, environment=spec.cli.environment, prefix=spec.cli.command_prefix or "",
                         api_version=spec.api_version, logs=logs, files=files) if ssh is not None else None
    if spec.transport is Transport.ssh_tunnel:
        assert ssh is not None and spec.ssh is not None
        socket = spec.ssh.slurmrestd_socket
        return RestBridge(SOCKET_URL if socket else spec.url or "", spec.user, tokens, api_version=spec.api_version,
                          transport=ssh.http_transport(uds=socket), ssh=ssh, logs=logs, files=files,
                          commands=commands)
    # rest: direct HTTP; an ssh block here only serves token minting, logs and the data plane.
    return RestBridge(spec.url or "", spec.user, tokens, api_version=spec.api_version, ssh=ssh, logs=logs,
                      files=files, commands=commands)
