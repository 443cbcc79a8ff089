"""The gateway's HTTP/1.1 client to services: keep-alive connections per endpoint, answers parsed by httptools
(uvicorn's C parser), bodies handed on as they arrive.

It exists for speed: httpx costs about as much CPU per request as the rest of the gateway together (profiled under
`make bench` B5). Connections come from a connector, so the same client runs directly (asyncio) or through a
cluster's SSH connection to its login node (the bridge's `open_connection`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httptools

Connector = Callable[[str, int], Awaitable[tuple[Any, Any]]]

READ_SIZE = 65536
IDLE_PER_ENDPOINT = 32
# Kept connections idle longer than this are not reused: uvicorn (vLLM's server too) closes them after 5 s, and
# a request written just as the service closes one would be lost.
IDLE_SECONDS = 4.0


class UpstreamConnectError(ConnectionError):
    """The service's port could not be reached."""


class UpstreamBroken(ConnectionError):
    """The service closed the connection or answered something that is not HTTP/1.1."""


class _Connection:
    def __init__(self, reader: Any, writer: Any):
        self.reader, self.writer = reader, writer
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.headers_done = self.done = self.keep_alive = False
        self.received = 0
        self.idle_since = 0.0

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # the parser forgets it once the message is complete
        self.done = True

    def reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status, self.headers, self.body = 0, [], []
        self.headers_done = self.done = self.keep_alive = False
        self.received = 0

    async def feed(self, timeout: float) -> None:
        data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
        if not data:
            if self.received and not self.done and not self.headers_done:
                raise UpstreamBroken("the service closed the connection in the middle of its answer's head")
            if not self.done and self.headers_done:
                # An answer without length ends with the connection.
                try:
                    self.parser.feed_data(b"")
                except httptools.HttpParserError:
                    pass
                if not self.done:
                    raise UpstreamBroken("the service closed the connection in the middle of its answer")
                return
            raise UpstreamBroken("the service closed the connection")
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise UpstreamBroken("the service switched protocols") from None
        except httptools.HttpParserError as exc:
            raise UpstreamBroken(f"the service's answer is not HTTP/1.1: {exc}") from None

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001  (closing a broken connection may fail in many ways)
            pass


class UpstreamResponse:
    """An answer whose head has arrived; `chunks()` yields its body as it comes, then the connection is reused."""

    def __init__(self, pool: "UpstreamPool", key: tuple[str, int], conn: _Connection, read_timeout: float):
        self._pool, self._key, self._conn, self._timeout = pool, key, conn, read_timeout
        self.status = conn.status
        self.headers = conn.headers
        self._closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.body:
                # What one read brought goes on at once, as one piece: passed on as it came, with one send.
                body, conn.body = conn.body, []
                yield body[0] if len(body) == 1 else b"".join(body)
            if conn.done:
                break
            await conn.feed(self._timeout)
        self._release()

    def _release(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        if conn.done and conn.keep_alive:
            conn.reset()
            self._pool._put(self._key, conn)
        else:
            conn.close()

    def close(self) -> None:
        """Give up on the rest of the answer (the client left): the connection is closed, not reused."""
        if not self._closed:
            self._closed = True
            self._conn.close()


class UpstreamPool:
    def __init__(self, connector: Connector | None = None):
        self.connector = connector or asyncio.open_connection
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # connections belong to the loop that made them

    def _put(self, key: tuple[str, int], conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < IDLE_PER_ENDPOINT:
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            conn.close()

    def _kept(self, key: tuple[str, int]) -> _Connection | None:
        """The most recently used kept connection that has not been idle too long."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if time.monotonic() - conn.idle_since < IDLE_SECONDS:
                return conn
            conn.close()
        return None

    async def _connect(self, host: str, port: int, timeout: float) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(self.connector(host, port), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise UpstreamConnectError(f"cannot connect to {host}:{port}: {exc or type(exc).__name__}") from exc
        except Exception as exc:  # noqa: BLE001  (an SSH channel refused: asyncssh's own error kinds)
            raise UpstreamConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return _Connection(reader, writer)

    async def request(self, method: str, host: str, port: int, target: str, headers: list[tuple[bytes, bytes]],
                      body: bytes, *, connect_timeout: float, read_timeout: float) -> UpstreamResponse:
        """Send the request; the answer once its head has arrived. A kept-alive connection the service closed
        meanwhile is replaced once (nothing of the request reached the service then)."""
        key = (host, port)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._idle, self._loop = {}, loop
        head = [f"{method} {target} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-length: {len(body)}\r\n".encode()]
        for name, value in headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"\r\n")
        payload = b"".join(head) + body
        while True:
            conn = self._kept(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(host, port, connect_timeout)
            try:
                conn.writer.write(payload)
                while not conn.headers_done:
                    await conn.feed(read_timeout)
            except (UpstreamBroken, ConnectionError, OSError) as exc:
                conn.close()
                if reused and conn.received == 0:
                    continue  # a kept connection the service had closed: nothing reached it; the next one
                if isinstance(exc, UpstreamBroken):
                    raise
                raise UpstreamBroken(str(exc) or type(exc).__name__) from exc
            except BaseException:
                conn.close()
                raise
            return UpstreamResponse(self, key, conn, read_timeout)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
