"""The operator's own status writes: a merge patch of the status subresource on kopf's session, and the API
server's refusal in its own words."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from aifactory.operator import statuswrites


async def _against(answer_status: int, seen: list) -> str | None:
    async def patch(request: web.Request) -> web.Response:
        seen.append((request.path, request.content_type, json.loads(await request.read()),
                     request.headers.get("Authorization")))
        return web.json_response({"kind": "AIService"}, status=answer_status)

    app = web.Application()
    app.router.add_patch("/apis/aifactory.io/v1alpha1/namespaces/{namespace}/aiservices/{name}/status", patch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer kopf's"}) as session:
            statuswrites.use(session, f"http://127.0.0.1:{port}/")
            try:
                await statuswrites.patch_status("aiservices", "team-a", "chat", {"jobId": "7", "phase": "pending"})
            except statuswrites.StatusNotWritten as exc:
                return str(exc)
            return None
    finally:
        statuswrites._session = None
        await runner.cleanup()


def test_a_status_is_merge_patched_on_the_session_kopf_logged_in_with():
    seen: list = []
    assert asyncio.run(_against(200, seen)) is None
    assert seen == [("/apis/aifactory.io/v1alpha1/namespaces/team-a/aiservices/chat/status",
                     "application/merge-patch+json", {"status": {"jobId": "7", "phase": "pending"}},
                     "Bearer kopf's")]


def test_a_refused_write_says_what_the_api_server_answered():
    assert asyncio.run(_against(404, [])) == "404 Not Found"


def test_no_write_before_the_login():
    with pytest.raises(statuswrites.StatusNotWritten, match="not logged in"):
        asyncio.run(statuswrites.patch_status("aiservices", "default", "x", {}))
