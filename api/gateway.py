"""The data path: a request for a service forwarded to its endpoint, the answer passed back as it comes.

It sits in every inference request, so it stays lean: no Kubernetes call (routes and statuses come from the watch
cache), no model of the body (only `model` and `stream` are read from it), no copy of a streamed answer (each chunk
goes out as it arrives), and the client's key never goes upstream. Token usage is read from the end of the answer
(a stream's last chunk carries it), and the service's last use is kept in memory (api/traffic.py).

Faces use it through plain ASGI: `read_body`, `header`, then `forward`; services are reached with api/upstream.py
over the connection their cluster gives (directly, or through SSH to the login node).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from aifactory.api.errors import BadRequest, ServiceNotAvailable, UpstreamError, UpstreamTimeout
from aifactory.api.traffic import key_of
from aifactory.api.upstream import UpstreamBroken, UpstreamConnectError, UpstreamPool, UpstreamResponse

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

MAX_BODY_BYTES = 64 * 1024 * 1024
# What of a request goes upstream: never Authorization, X-API-Key or cookies.
# No accept-encoding either: the answer comes back uncompressed, so that its usage can be read.
FORWARDED_REQUEST_HEADERS = frozenset({b"content-type", b"accept", b"user-agent", b"x-request-id"})
PASSED_BACK_HEADERS = frozenset({b"content-type", b"content-length", b"content-encoding", b"cache-control",
                                 b"x-request-id"})
_decoder = json.JSONDecoder()


class PayloadTooLarge(BadRequest):
    pass


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"The request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
        parts.append(chunk)
    return b"".join(parts)


def header(scope: dict, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object (a 400 in the client's terms otherwise)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise BadRequest("The body must be a JSON object")
    return parsed


def usage_in(tail: bytes) -> tuple[int, int] | None:
    """(prompt, completion) tokens from the last `"usage": {...}` in the end of an answer, if any."""
    at = tail.rfind(b'"usage"')
    if at < 0:
        return None
    colon = tail.find(b":", at + 7)
    start = colon + 1
    while start < len(tail) and tail[start:start + 1] in b" \t\r\n":
        start += 1
    if colon < 0 or tail[start:start + 1] != b"{":
        return None
    try:
        usage, _ = _decoder.raw_decode(tail[start:].decode("utf-8", "replace"))
    except ValueError:
        return None
    if not isinstance(usage, dict):
        return None

    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) and value >= 0 else 0
    return count("prompt_tokens"), count("completion_tokens")


def host_port(endpoint: str) -> tuple[str, int]:
    """("10.0.0.5", 8000) of "http://10.0.0.5:8000" (IPv6 in brackets too)."""
    rest = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)


async def forward(state, obj: dict, endpoint: str, scope: dict, receive: Receive, send: Send, body: bytes, *,
                  path: str, caller, watch_disconnect: bool = False) -> None:
    """Send the request to the service and its answer back to the client, chunk by chunk."""
    pool: UpstreamPool = await state.services.upstream_for(obj)
    headers = [(k, v) for k, v in scope["headers"] if k in FORWARDED_REQUEST_HEADERS]
    query = scope.get("query_string") or b""
    target = path + (f"?{query.decode('latin-1')}" if query else "")
    host, port = host_port(endpoint)
    settings = state.settings
    service = key_of(obj)
    traffic = state.traffic
    traffic.begin(service)
    tokens = None
    try:
        try:
            response = await pool.request(scope["method"], host, port, target, headers, body,
                                          connect_timeout=settings.connect_timeout,
                                          read_timeout=settings.gateway_timeout)
        except UpstreamConnectError as exc:
            raise ServiceNotAvailable(f"{exc}: the service is not answering (restarting?)",
                                      retry_after=settings.retry_after_seconds) from exc
        except asyncio.TimeoutError as exc:
            raise UpstreamTimeout(f"{service[1]} did not answer within {settings.gateway_timeout:g}s", 504) from exc
        except UpstreamBroken as exc:
            raise UpstreamError(f"{service[1]}: {exc}") from exc
        try:
            tokens = await _pass_back(response, receive, send, watch_disconnect)
        finally:
            response.close()
    finally:
        prompt, completion = tokens or (0, 0)
        traffic.end(service, caller.tenant, caller.key_id, prompt, completion)


async def _pass_back(response: UpstreamResponse, receive: Receive, send: Send,
                     watch_disconnect: bool) -> tuple[int, int] | None:
    out_headers = [(k, v) for k, v in response.headers if k in PASSED_BACK_HEADERS]
    await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
    tail: deque[bytes] = deque(maxlen=3)  # usage sits in the last chunks (a stream's last data: line)
    watcher = None
    if watch_disconnect:
        # A client that goes away ends the upstream request too (a long generation would run on otherwise).
        streaming = asyncio.current_task()
        watcher = asyncio.ensure_future(_disconnected(receive))
        watcher.add_done_callback(lambda w: streaming.cancel() if not w.cancelled() and w.result() else None)
    try:
        async for chunk in response.chunks():
            tail.append(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except (UpstreamBroken, asyncio.TimeoutError) as exc:
        log.warning("the upstream's answer broke off: %s", exc or type(exc).__name__)
        return None
    except asyncio.CancelledError:
        if watcher is not None and watcher.done() and not watcher.cancelled() and watcher.result():
            asyncio.current_task().uncancel()
            return None  # the client left
        raise
    finally:
        if watcher is not None and not watcher.done():
            watcher.cancel()
    return usage_in(b"".join(tail))


async def _disconnected(receive: Receive) -> bool:
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return True
