"""Status writes made outside kopf's own patches, on kopf's HTTP session to the Kubernetes API.

The job id of a service whose job is submitted at its creation event is written at once (B1): on the event loop,
over the connections kopf keeps open, it costs about a millisecond less than through the kubernetes client in a
worker thread.
"""

from __future__ import annotations

import json

import aiohttp

from aifactory.models import GROUP, VERSION

_session: tuple[aiohttp.ClientSession, str] | None = None


class StatusNotWritten(Exception):
    """The API server refused the write or could not be reached; the words say which."""


def use(session: aiohttp.ClientSession, server: str) -> None:
    """The session kopf uses from now on (each login makes a new one)."""
    global _session
    _session = (session, server.rstrip("/"))


async def patch_status(plural: str, namespace: str, name: str, fields: dict) -> None:
    """A merge patch of an object's status subresource."""
    if _session is None:
        raise StatusNotWritten("not logged in to the Kubernetes API yet")
    session, server = _session
    url = f"{server}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status"
    try:
        async with session.patch(url, data=json.dumps({"status": fields}),
                                 headers={"Content-Type": "application/merge-patch+json"}) as answer:
            await answer.read()
            if answer.status >= 300:
                raise StatusNotWritten(f"{answer.status} {answer.reason}")
    except (aiohttp.ClientError, RuntimeError) as exc:  # RuntimeError: a session closed by a new login
        raise StatusNotWritten(f"{type(exc).__name__}: {exc}") from exc
