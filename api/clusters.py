"""Slurm bridges for the API (job logs, and the way to the services' endpoints): one per SlurmCluster, rebuilt when
its spec changes. The SlurmCluster specs come from the store's watch."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

import httpx
from kubernetes import client

from aifactory.models import SecretKeyRef, SlurmClusterSpec
from aifactory.slurm.bridge import SlurmBridge
from aifactory.slurm.connect import bridge_for


class ClusterNotFound(LookupError):
    pass


class SlurmClusters:
    def __init__(self, api: client.ApiClient, operator_namespace: str, lookup: Callable[[str], dict | None],
                 timeout: httpx.Timeout):
        self._core = client.CoreV1Api(api)
        self._namespace = operator_namespace
        self._lookup = lookup
        self._timeout = timeout
        self._bridges: dict[str, tuple[SlurmClusterSpec, SlurmBridge, httpx.AsyncClient | None]] = {}
        self._lock = asyncio.Lock()

    async def _read_secret(self, ref: SecretKeyRef) -> str:
        def read() -> str:
            namespace = ref.namespace or self._namespace
            secret = self._core.read_namespaced_secret(ref.name, namespace)
            data = (secret.data or {}).get(ref.key)
            if data is None:
                raise ClusterNotFound(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
            return base64.b64decode(data).decode().strip()

        return await asyncio.to_thread(read)

    def spec(self, name: str) -> SlurmClusterSpec:
        obj = self._lookup(name)
        if obj is None:
            raise ClusterNotFound(f"SlurmCluster '{name}' not found")
        return SlurmClusterSpec.model_validate(obj.get("spec") or {})

    async def get(self, name: str) -> tuple[SlurmClusterSpec, SlurmBridge]:
        spec, bridge, _ = await self._entry(name)
        return spec, bridge

    async def http(self, name: str, direct: httpx.AsyncClient) -> httpx.AsyncClient:
        """The client that reaches this cluster's compute nodes: `direct` unless the cluster is behind SSH."""
        if self.spec(name).ssh is None:
            return direct
        _, _, http = await self._entry(name)
        assert http is not None
        return http

    async def _entry(self, name: str) -> tuple[SlurmClusterSpec, SlurmBridge, httpx.AsyncClient | None]:
        spec = self.spec(name)
        async with self._lock:
            known = self._bridges.get(name)
            if known and known[0] == spec:
                return known
            bridge = await bridge_for(spec, self._read_secret)
            http = (httpx.AsyncClient(transport=bridge.http_transport(), timeout=self._timeout, trust_env=False)
                    if spec.ssh is not None else None)
            self._bridges[name] = entry = (spec, bridge, http)
        if known:
            await self._close(known)
        return entry

    @staticmethod
    async def _close(entry: tuple[SlurmClusterSpec, SlurmBridge, httpx.AsyncClient | None]) -> None:
        if entry[2] is not None:
            await entry[2].aclose()
        await entry[1].close()

    async def close(self) -> None:
        for entry in self._bridges.values():
            await self._close(entry)
        self._bridges.clear()
