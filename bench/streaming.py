"""B5's streaming runs: time to first token and streams per second, for one target (direct, aifactory, LiteLLM).

wrk cannot see inside a streamed answer, so this client (asyncio + httpx, the same for every target) times the
arrival of the first content chunk of each stream, and counts whole streams done with many at once.
"""

from __future__ import annotations

import asyncio
import re
import time

import httpx

from bench.stats import percentile

CONTENT = re.compile(rb'"content":\s*"[^"]')  # a delta that carries text (not the empty role chunk)


async def _one(client: httpx.AsyncClient, url: str, body: dict, headers: dict) -> tuple[float | None, bool]:
    """(seconds to the first chunk that carries content, whether the stream ended with [DONE])."""
    started = time.perf_counter()
    first = None
    async with client.stream("POST", url, json=body, headers=headers) as answer:
        if answer.status_code != 200:
            await answer.aread()
            return None, False
        done = False
        async for chunk in answer.aiter_raw():
            if first is None and CONTENT.search(chunk):
                first = time.perf_counter() - started
            if b"[DONE]" in chunk:
                done = True
        return first, done


async def _measure(url: str, body: dict, auth: str | None, *, seconds_latency: float, seconds_load: float,
                   connections: int) -> dict:
    headers = {"Authorization": auth} if auth else {}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(timeout=30, trust_env=False, limits=limits) as client:
        for _ in range(5):  # warm-up: connections, caches
            await _one(client, url, body, headers)
        ttft, errors = [], 0
        deadline = time.monotonic() + seconds_latency
        while time.monotonic() < deadline:
            first, ok = await _one(client, url, body, headers)
            if first is None or not ok:
                errors += 1
            else:
                ttft.append(first)
        streams = 0

        async def worker(until: float) -> None:
            nonlocal streams, errors
            while time.monotonic() < until:
                first, ok = await _one(client, url, body, headers)
                if ok and first is not None:
                    streams += 1
                else:
                    errors += 1
        started = time.monotonic()
        await asyncio.gather(*(worker(started + seconds_load) for _ in range(connections)))
        elapsed = time.monotonic() - started
    return {"ttft_p50_ms": percentile(ttft, 50) * 1000 if ttft else None,
            "ttft_p95_ms": percentile(ttft, 95) * 1000 if ttft else None, "n": len(ttft),
            "streams_per_s": streams / elapsed, "connections": connections, "errors": errors}


def measure(url: str, body: dict, auth: str | None, *, seconds_latency: float, seconds_load: float,
            connections: int) -> dict:
    return asyncio.run(_measure(url, body, auth, seconds_latency=seconds_latency, seconds_load=seconds_load,
                                connections=connections))
