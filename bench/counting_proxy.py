"""A loopback HTTP/1.1 proxy that counts the requests passing through it, by method and path.

It sits between the operator and slurmrestd (a SlurmCluster whose url is the proxy), so what it counts is what
slurmctld is asked, at the transport, whatever the client thinks it sends. Bytes are forwarded unchanged;
only the request line and the framing headers are read. It runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Self
from urllib.parse import urlsplit

from bench.stats import count_kinds

_MAX_HEAD = 64 * 1024


class ProxyError(Exception):
    pass


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise ProxyError("connection closed inside a message head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise ProxyError("message head too long") from exc
    return head


def _headers(head: bytes) -> dict[str, str]:
    out = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            out[name.strip().lower()] = value.strip()
    return out


async def _copy_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str],
                     until_close: bool) -> bool:
    """Forward one message body; returns False when the body ran to the end of the connection."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    line = await reader.readuntil(b"\r\n")
                    writer.write(line)
                    if line == b"\r\n":
                        return True
            writer.write(await reader.readexactly(size + 2))
    if "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining:
            chunk = await reader.read(min(remaining, 1 << 16))
            if not chunk:
                raise ProxyError("connection closed inside a body")
            writer.write(chunk)
            remaining -= len(chunk)
        return True
    if until_close:
        while chunk := await reader.read(1 << 16):
            writer.write(chunk)
        return False
    return True


class CountingProxy:
    """`with CountingProxy("http://127.0.0.1:6820") as proxy:` ... `proxy.url`, `proxy.snapshot()`."""

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the counting proxy forwards to plain http://host:port, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.host, self.port = host, port
        self.requests: list[tuple[float, str, str]] = []  # (monotonic time, method, target)
        # (request head in, answer head back from slurmrestd, method, target), for timing one request
        self.exchanges: list[tuple[float, float, str, str]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- counting ---------------------------------------------------------------------------------------

    def _record(self, method: str, target: str) -> None:
        with self._lock:
            self.requests.append((time.monotonic(), method, target))

    def total(self) -> int:
        with self._lock:
            return len(self.requests)

    def snapshot(self) -> dict[str, int]:
        """Requests so far by kind ('GET /slurm/v0.0.38/jobs': 12)."""
        with self._lock:
            return count_kinds((m, t) for _, m, t in self.requests)

    def between(self, start: float, end: float) -> dict[str, int]:
        with self._lock:
            return count_kinds((m, t) for when, m, t in self.requests if start <= when < end)

    def answered(self, method: str, path_end: str, after: float) -> list[tuple[float, float]]:
        """(request in, answer back) of the requests of this kind that came in after `after`, oldest first."""
        with self._lock:
            return [(start, end) for start, end, m, t in self.exchanges
                    if m == method and t.split("?")[0].endswith(path_end) and start >= after]

    # -- serving ----------------------------------------------------------------------------------------

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_w = None
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.upstream, limit=_MAX_HEAD)
            while True:
                head = await _read_head(client_r)
                if head is None:
                    break
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                method, target, _ = request_line.split(" ", 2)
                self._record(method, target)
                upstream_w.write(head)
                await _copy_body(client_r, upstream_w, _headers(head), until_close=False)
                await upstream_w.drain()
                asked = time.monotonic()
                response_head = await _read_head(upstream_r)
                if response_head is None:
                    raise ProxyError("upstream closed the connection before answering")
                with self._lock:
                    self.exchanges.append((asked, time.monotonic(), method, target))
                client_w.write(response_head)
                status = int(response_head.split(b" ", 2)[1])
                headers = _headers(response_head)
                has_body = method != "HEAD" and status not in (204, 304) and status >= 200
                if has_body and not await _copy_body(upstream_r, client_w, headers, until_close=True):
                    await client_w.drain()
                    break
                await client_w.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ProxyError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the client sees a closed connection, as it would from a failing slurmrestd
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            for w in (client_w, upstream_w):
                if w is not None:
                    w.close()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._server.serve_forever()  # no wait_closed(): open keep-alive connections must not hold it

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())  # cancels the open connections' tasks when it ends
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001  (reported to the starting thread)
            self._failure = exc
            self._ready.set()

    def start(self) -> CountingProxy:
        self._thread = threading.Thread(target=self._run, name="counting-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._failure is not None:
            raise RuntimeError(f"the counting proxy did not start: {self._failure}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
