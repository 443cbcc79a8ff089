"""A loopback HTTP proxy in front of the real slurmrestd, for resilience tests only.

It forwards every request unchanged, counts them by (method, path), and can hold the answer to a job submit:
slurmrestd has already taken the job, but the client (the operator) has not heard back yet. It can also answer
a forwarded submit with 504, as a gateway whose wait ran out while slurmctld took the job. It runs its own
event loop in a thread so that a test can drive it while it serves the operator (another process).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from urllib.parse import urlsplit


class SlurmrestdProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.log: list[tuple[float, str, str]] = []  # (time, method, path without query)
        self.hold_submits = False
        self.gateway_timeouts = 0  # submits still to answer with 504 after forwarding them
        self.submit_forwarded = threading.Event()
        self.release = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="slurmrestd-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "SlurmrestdProxy":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close():
            self._server.close()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def counts(self, since: float = 0.0, until: float | None = None) -> Counter:
        until = until or time.time()
        return Counter(f"{m} {p}" for t, m, p in list(self.log) if since <= t <= until)

    @staticmethod
    async def _read_message(reader: asyncio.StreamReader, *, response_to: str | None = None) -> tuple[bytes, bool]:
        """One HTTP/1.1 message (head + body); the bool says the peer closes after it."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        closing = headers.get("connection", "").lower() == "close"
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif response_to is not None and (response_to == "HEAD" or lines[0].split(" ")[1] in ("204", "304")):
            body = b""
        elif response_to is not None:
            body, closing = await reader.read(), True  # no length: the body runs to the end of the connection
        else:
            body = b""
        return head + body, closing

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            while True:
                try:
                    request, _ = await self._read_message(client_reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, target = request.split(b" ", 2)[:2]
                path = urlsplit(target.decode()).path
                self.log.append((time.time(), method.decode(), path))
                up_writer.write(request)
                await up_writer.drain()
                response, closing = await self._read_message(up_reader, response_to=method.decode())
                if self.hold_submits and method == b"POST" and path.endswith("/job/submit"):
                    self.submit_forwarded.set()
                    await asyncio.to_thread(self.release.wait)
                if self.gateway_timeouts and method == b"POST" and path.endswith("/job/submit"):
                    self.gateway_timeouts -= 1
                    response = (b"HTTP/1.1 504 Gateway Timeout\r\ncontent-type: text/plain\r\ncontent-length: 15\r\n"
                                b"\r\nGateway Timeout")
                client_writer.write(response)
                await client_writer.drain()
                if closing:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            up_writer.close()
            client_writer.close()
