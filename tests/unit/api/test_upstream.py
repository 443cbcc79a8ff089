"""The gateway's HTTP/1.1 client against raw asyncio servers: keep-alive, a closed idle connection, chunks as
they come, errors."""

from __future__ import annotations

import asyncio

import pytest

from aifactory.api.upstream import UpstreamBroken, UpstreamConnectError, UpstreamPool


async def server(handle):
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


async def read_request(reader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int([line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0]
                 .split(b":")[1])
    return head + await reader.readexactly(length)


async def test_keep_alive_reuses_one_connection_and_a_closed_idle_one_is_replaced():
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        try:
            while True:
                request = await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n"
                             b'{"ok":true}')
                await writer.drain()
                if b"close-after" in request:
                    writer.close()
                    return
        except asyncio.IncompleteReadError:
            writer.close()

    srv, port = await server(handle)
    pool = UpstreamPool()
    for body in (b"a", b"b", b"close-after"):
        answer = await pool.request("POST", "127.0.0.1", port, "/v1/x", [(b"content-type", b"text/plain")], body,
                                    connect_timeout=2, read_timeout=2)
        assert answer.status == 200 and (b"content-type", b"application/json") in answer.headers
        assert b"".join([c async for c in answer.chunks()]) == b'{"ok":true}'
    assert len(connections) == 1
    await asyncio.sleep(0.05)  # the server has closed the kept connection meanwhile: a new one is made
    answer = await pool.request("GET", "127.0.0.1", port, "/health", [], b"", connect_timeout=2, read_timeout=2)
    assert b"".join([c async for c in answer.chunks()]) == b'{"ok":true}' and len(connections) == 2
    pool.close()
    srv.close()


async def test_chunked_answers_come_piece_by_piece_before_the_end():
    release = asyncio.Event()

    async def handle(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"7\r\ndata: 1\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await writer.drain()

    srv, port = await server(handle)
    pool = UpstreamPool()
    answer = await pool.request("POST", "127.0.0.1", port, "/s", [], b"{}", connect_timeout=2, read_timeout=2)
    pieces = answer.chunks()
    assert await pieces.__anext__() == b"data: 1"  # before the server sends the rest
    release.set()
    assert [c async for c in pieces] == [b"data: 2"]
    pool.close()
    srv.close()


async def test_refused_and_broken_answers_are_errors():
    pool = UpstreamPool()
    srv, port = await server(lambda r, w: None)
    srv.close()
    await srv.wait_closed()
    with pytest.raises(UpstreamConnectError):
        await pool.request("GET", "127.0.0.1", port, "/", [], b"", connect_timeout=1, read_timeout=1)

    async def garbage(reader, writer):
        await read_request(reader)
        writer.write(b"SPEAKING NONSENSE\r\n\r\n")
        await writer.drain()
        writer.close()
    srv, port = await server(garbage)
    with pytest.raises(UpstreamBroken):
        await pool.request("GET", "127.0.0.1", port, "/", [], b"", connect_timeout=1, read_timeout=1)
    srv.close()
