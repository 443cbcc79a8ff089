"""The REST API in process: the real app and the real Store, with its Kubernetes watches replaced by memory
(writes land in the informers as the watch would bring them). The e2e tests drive the real watch and apiserver."""

from __future__ import annotations

import asyncio
import copy
import itertools
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from kubernetes import client as k8s

from aifactory.api.app import create_app
from aifactory.api.config import ApiSettings
from aifactory.api.identity.admin import apikey_manifest
from aifactory.api.identity.keys import new_key
from aifactory.api.seed import prompting
from aifactory.api.store import Store
from aifactory.api.upstream import UpstreamPool
from aifactory.models import Role
from aifactory.servers.openai_test_server import create_app as openai_test_app

_versions = itertools.count(1)


class MemoryStore(Store):
    """The real Store (its reads, catalog and listings) over objects held in memory."""

    def __init__(self, settings: ApiSettings):
        super().__init__(k8s.ApiClient(), k8s.ApiClient(), settings)
        for informer in self.informers.values():
            informer.synced.set()
        self.fail_with: Exception | None = None
        self.deleted: list[str] = []
        self.add_cluster("default")

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    async def ready(self) -> None:
        if self.fail_with:
            raise self.fail_with

    def _stamp(self, obj: dict) -> dict:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        meta["resourceVersion"] = str(next(_versions))
        return obj

    async def create(self, plural: str, manifest: dict, *, dry_run: bool = False) -> dict:
        if self.fail_with:
            raise self.fail_with
        obj = self._stamp(copy.deepcopy(manifest))
        if self.informers[plural].named(obj["metadata"]["name"]) is not None:
            raise k8s.ApiException(status=409, reason="Conflict")
        if not dry_run:
            self.informers[plural].put(obj)
        return obj

    async def patch(self, plural: str, obj: dict, body: dict, *, status: bool = False) -> dict:
        new = copy.deepcopy(self.informers[plural].named(obj["metadata"]["name"]) or obj)
        for part, changes in body.items():
            new.setdefault(part, {}).update(changes)
        self.informers[plural].put(self._stamp(new))
        return new

    async def delete(self, plural: str, obj: dict) -> None:
        self.deleted.append(obj["metadata"]["name"])
        self.informers[plural].drop(obj)

    def add(self, name: str, recipe: str = "testing/openai-echo", namespace: str = "default", **status) -> dict:
        obj = self._stamp({"metadata": {"name": name, "namespace": namespace}, "spec": {"recipe": recipe},
                           "status": status})
        self.services.put(obj)
        return obj

    def add_cluster(self, name: str) -> None:
        self.clusters.put(self._stamp({"metadata": {"name": name}, "spec": {
            "url": "http://127.0.0.1:9", "workingDirectory": "/tmp"}}))

    def add_tenant(self, name: str, **spec) -> None:
        self.tenants.put(self._stamp({"metadata": {"name": name}, "spec": {"namespace": name, **spec}}))

    def add_key(self, tenant: str, role: Role, **fields) -> str:
        """A new key of this tenant, stored as the API stores keys (its hash); returns the key."""
        made = new_key()
        self.keys.put(self._stamp(apikey_manifest(made, tenant, name=f"{role.value} of {tenant}", role=role,
                                                   **fields)))
        return made.key


@dataclass
class Api:
    client: TestClient
    store: MemoryStore
    admin: str  # keys: an admin of "default", a manager and an inference user of "team-a"
    manager: str
    inference: str

    def as_key(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


_served: dict[int, tuple[object, int]] = {}


def serve(app) -> int:
    """The ASGI app on a real loopback port (a uvicorn server in a thread, one per app, for the session): the
    gateway's client speaks HTTP/1.1 over sockets."""
    known = _served.get(id(app))
    if known is not None:
        return known[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="off"))
    threading.Thread(target=server.run, daemon=True, name=f"upstream-{port}").start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    _served[id(app)] = (app, port)
    return port


_DEFAULT_UPSTREAM = openai_test_app("demo")


def make_api(upstream=None, **settings) -> Api:
    app = create_app(ApiSettings(retry_after_seconds=7, **settings))
    store = MemoryStore(app.state.aifactory.settings)
    state = app.state.aifactory
    state._store = store
    upstream = upstream or _DEFAULT_UPSTREAM
    state._http = httpx.AsyncClient(transport=httpx.ASGITransport(app=upstream))
    port = serve(upstream)
    # Every made-up endpoint (http://node1:8000, ...) is this upstream.
    state._upstream = UpstreamPool(lambda host, _port: asyncio.open_connection("127.0.0.1", port))
    store.add_tenant("default")
    store.add_tenant("team-a", slurm={"account": "acct-a"})
    return Api(TestClient(app, raise_server_exceptions=False), store, admin=store.add_key("default", Role.admin),
               manager=store.add_key("team-a", Role.management), inference=store.add_key("team-a", Role.inference))


@pytest.fixture(autouse=True)
def fresh_default_models(monkeypatch):
    """Import into a test module: the stand-in services share made-up endpoints, so each test starts without
    remembered default models."""
    monkeypatch.setattr(prompting, "default_models", prompting.DefaultModels())
