"""One SSH connection to a cluster's login node, shared by everything that needs the far side.

slurmrestd (over a TCP port or a unix socket), the Slurm CLI, job log files and the services on the compute
nodes are all reached through this one connection (direct-tcpip / direct-streamlocal channels and exec
sessions); it is opened on first use and opened again when it broke.

The login node's host key must be in the known_hosts text given by the SlurmCluster: unknown keys are refused.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import ssl
from dataclasses import dataclass, field
from typing import Any

import asyncssh
import httpcore
import httpx

from aifactory.slurm.errors import SlurmUnreachable, SubmitUncertain

log = logging.getLogger(__name__)

# asyncssh logs every channel and command line at INFO; on a busy cluster that is a line per poll, and a command
# line may name user data (job names, paths). Warnings only, unless a logging setup asked for asyncssh itself.
if logging.getLogger("asyncssh").level == logging.NOTSET:
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in. `private_key` and `known_hosts` are file texts (from Secrets or the spec)."""

    host: str
    user: str
    private_key: str = field(repr=False)
    known_hosts: str
    port: int = 22
    connect_timeout: float = 15.0
    keepalive_interval: float = 30.0

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


class SshConnection:
    """The shared connection: opened lazily, reopened after it broke, closed by `close()`."""

    def __init__(self, target: SshTarget):
        if not target.known_hosts.strip():
            # asyncssh would accept any host key without known_hosts; never do that.
            raise ValueError(f"SSH to {target.where} needs known_hosts: the login node's host key must be known")
        self.target = target
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self.connects = 0

    def __repr__(self) -> str:
        return f"SshConnection({self.target.where})"

    async def connection(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            self._conn = await self._connect()
            self.connects += 1
            return self._conn

    async def _connect(self) -> asyncssh.SSHClientConnection:
        t = self.target
        try:
            key = asyncssh.import_private_key(t.private_key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise SlurmUnreachable(f"SSH private key for {t.where} cannot be read: {exc}") from None
        try:
            return await asyncssh.connect(
                t.host, t.port, username=t.user, client_keys=[key],
                known_hosts=asyncssh.import_known_hosts(t.known_hosts),
                # Only what the SlurmCluster gives: no ~/.ssh/config, no agent, no default key files.
                config=[], agent_path=None, password=None, kbdint_auth=False,
                connect_timeout=t.connect_timeout, keepalive_interval=t.keepalive_interval,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise SlurmUnreachable(
                f"SSH host key of {t.host}:{t.port} does not match the SlurmCluster's known_hosts; "
                f"connection refused ({exc.reason})") from None
        except asyncssh.PermissionDenied as exc:
            raise SlurmUnreachable(f"SSH login as {t.where} refused: {exc.reason}") from None
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
            raise SlurmUnreachable(f"SSH to {t.where} failed: {_words(exc)}") from None

    async def _with_connection(self, use, *, once: bool = False):
        """Run use(conn); when the connection turns out to be broken, reconnect once and try again. `once`: what
        use() does must not be done twice (sbatch): a loss while it ran is SubmitUncertain, never a second try."""
        for attempt in (1, 2):
            conn = await self.connection()
            try:
                return await use(conn)
            except (asyncssh.ConnectionLost, asyncssh.DisconnectError, BrokenPipeError, ConnectionError) as exc:
                await self._drop(conn)
                if once:
                    raise SubmitUncertain(f"SSH to {self.target.where} lost while the command ran (it may or may "
                                          f"not have done its work): {_words(exc)}") from None
                if attempt == 2:
                    raise SlurmUnreachable(f"SSH to {self.target.where} lost: {_words(exc)}") from None
        raise AssertionError("unreachable")

    async def _drop(self, conn: asyncssh.SSHClientConnection) -> None:
        async with self._lock:
            if self._conn is conn:
                self._conn = None
        conn.abort()

    async def open_connection(self, host: str, port: int) -> tuple[Any, Any]:
        """A direct-tcpip channel to host:port as seen from the login node: (reader, writer) of bytes."""
        async def use(conn):
            try:
                return await conn.open_connection(host, port, encoding=None)
            except asyncssh.ChannelOpenError as exc:
                raise OSError(f"the login node {self.target.host} cannot reach {host}:{port}: {exc.reason}") from None
        return await self._with_connection(use)

    async def open_unix_connection(self, path: str) -> tuple[Any, Any]:
        async def use(conn):
            try:
                return await conn.open_unix_connection(path, encoding=None)
            except asyncssh.ChannelOpenError as exc:
                raise OSError(f"the login node {self.target.host} cannot open {path}: {exc.reason}") from None
        return await self._with_connection(use)

    async def run(self, argv: list[str] | str, *, input: str | None = None, environment: dict[str, str] | None = None,
                  prefix: str = "", timeout: float = 60.0, once: bool = False) -> CommandResult:
        """Run a command on the login node. argv lists are quoted with shlex; a str is a trusted shell line.

        `environment` is set with quoted `export` statements (sshd's AcceptEnv is rarely open for it), and
        `prefix` (from the SlurmCluster, e.g. "module load slurm &&") is put in front as given. `once`: the
        command must not run twice (sbatch); a lost connection or a timeout while it ran is SubmitUncertain.
        """
        line = argv if isinstance(argv, str) else shlex.join(argv)
        exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in (environment or {}).items())
        # Through `sh -c` so that the line means the same whatever the user's login shell is (csh at some sites).
        command = "sh -c " + shlex.quote(f"{exports}{prefix + ' ' if prefix else ''}{line}")

        async def use(conn):
            try:
                done = await conn.run(command, input=input, check=False, timeout=timeout)
            except asyncssh.TimeoutError:
                words = f"`{_first_word(line)}` on {self.target.host} took over {timeout:.0f}s"
                raise (SubmitUncertain if once else SlurmUnreachable)(words) from None
            except asyncssh.ChannelOpenError as exc:
                # Nothing ran; e.g. the login node's sshd allows no more sessions on one connection (MaxSessions).
                raise SlurmUnreachable(f"the login node {self.target.host} refused a new session: "
                                       f"{_words(exc)}") from None
            status = done.exit_status if done.exit_status is not None else -1
            return CommandResult(status, _text(done.stdout), _text(done.stderr))
        return await self._with_connection(use, once=once)

    def http_transport(self, *, uds: str | None = None) -> httpx.AsyncBaseTransport:
        """An httpx transport whose connections are channels of this SSH connection (to the URL's host:port,
        resolved on the login node, or to the unix socket `uds` there)."""
        return SshHttpTransport(self, uds=uds)

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), 5)
            except (asyncio.TimeoutError, OSError, asyncssh.Error):
                pass


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _words(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or str(exc) or type(exc).__name__


def _first_word(line: str) -> str:
    parts = line.split()
    return parts[0] if parts else line


class _ChannelStream(httpcore.AsyncNetworkStream):
    """An SSH channel as httpcore's network stream."""

    def __init__(self, reader: Any, writer: Any):
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return await asyncio.wait_for(self._reader.read(max_bytes), timeout)
        except asyncio.TimeoutError:
            raise httpcore.ReadTimeout("read through the SSH tunnel timed out") from None
        except (asyncssh.Error, OSError) as exc:
            raise httpcore.ReadError(_words(exc)) from None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            await asyncio.wait_for(self._writer.drain(), timeout)
        except asyncio.TimeoutError:
            raise httpcore.WriteTimeout("write through the SSH tunnel timed out") from None
        except (asyncssh.Error, OSError) as exc:
            raise httpcore.WriteError(_words(exc)) from None

    async def aclose(self) -> None:
        try:
            self._writer.close()
        except (asyncssh.Error, OSError):
            pass

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("https inside the SSH tunnel is not supported: the tunnel already encrypts; "
                                    "use http:// or a unix socket on the login node")

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # httpcore asks this of an idle pooled connection: readable means the far end closed it.
            try:
                return self._reader.at_eof() or self._writer.channel.is_closing()
            except (AttributeError, asyncssh.Error, OSError):
                return True
        return None


class _SshNetworkBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, ssh: SshConnection):
        self._ssh = ssh

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        try:
            reader, writer = await asyncio.wait_for(self._ssh.open_connection(host, port), timeout)
        except asyncio.TimeoutError:
            raise httpcore.ConnectTimeout(f"opening a channel to {host}:{port} timed out") from None
        except (OSError, SlurmUnreachable) as exc:
            raise httpcore.ConnectError(str(exc)) from None
        return _ChannelStream(reader, writer)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        try:
            reader, writer = await asyncio.wait_for(self._ssh.open_unix_connection(path), timeout)
        except asyncio.TimeoutError:
            raise httpcore.ConnectTimeout(f"opening a channel to {path} timed out") from None
        except (OSError, SlurmUnreachable) as exc:
            raise httpcore.ConnectError(str(exc)) from None
        return _ChannelStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class SshHttpTransport(httpx.AsyncHTTPTransport):
    """httpx's own HTTP/1.1 transport, with connections opened as channels of the shared SSH connection.

    Closing it closes its pooled channels, never the SSH connection.
    """

    def __init__(self, ssh: SshConnection, *, uds: str | None = None):
        super().__init__(trust_env=False, uds=uds)
        # httpx builds its httpcore pool in __init__ without a way to pass a network backend; swap the pool.
        self._pool = httpcore.AsyncConnectionPool(network_backend=_SshNetworkBackend(ssh), uds=uds,
                                                  max_connections=20, keepalive_expiry=30.0)
