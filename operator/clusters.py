"""The Slurm clusters the operator knows: one bridge and one job poller each, built from SlurmCluster resources."""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass

import httpx
from kubernetes import client as k8s

from aifactory.models import SecretKeyRef, SlurmClusterSpec
from aifactory.operator.config import config
from aifactory.slurm.bridge import SlurmBridge
from aifactory.slurm.connect import bridge_for
from aifactory.slurm.poller import JobPoller

log = logging.getLogger(__name__)


class ClusterNotReady(LookupError):
    pass


async def read_secret_key(name: str, namespace: str, key: str) -> str:
    def read() -> str:
        secret = k8s.CoreV1Api().read_namespaced_secret(name, namespace)
        data = (secret.data or {}).get(key)
        if data is None:
            raise KeyError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data).decode().strip()

    return await asyncio.to_thread(read)


@dataclass
class Cluster:
    name: str
    spec: SlurmClusterSpec
    bridge: SlurmBridge
    poller: JobPoller
    # The data plane: reaches services at node:port the way this cluster is reached (through SSH when it is).
    http: httpx.AsyncClient


class ClusterRegistry:
    def __init__(self) -> None:
        self._clusters: dict[str, Cluster] = {}

    def get(self, name: str) -> Cluster:
        try:
            return self._clusters[name]
        except KeyError:
            raise ClusterNotReady(f"SlurmCluster '{name}' is not known to the operator (yet)") from None

    def all(self) -> list[Cluster]:
        return list(self._clusters.values())

    async def put(self, name: str, spec: SlurmClusterSpec, default_namespace: str) -> Cluster:
        old = self._clusters.get(name)
        if old and old.spec == spec:
            return old

        async def read_secret(ref: SecretKeyRef) -> str:
            return await read_secret_key(ref.name, ref.namespace or default_namespace, ref.key)

        bridge = await bridge_for(spec, read_secret)
        poller = JobPoller(bridge, spec.poll_interval_seconds)
        if old:
            # Keep what the old poller knew so that no service loses its job's last state.
            poller.jobs = dict(old.poller.jobs)
            await self.remove(name)
        cluster = Cluster(name, spec, bridge, poller,
                          http=httpx.AsyncClient(transport=bridge.http_transport(), timeout=config.probe_timeout,
                                                 trust_env=False))
        self._clusters[name] = cluster
        poller.start()
        log.info("SlurmCluster %s: polling %r every %.1fs", name, bridge, spec.poll_interval_seconds)
        return cluster

    async def remove(self, name: str) -> None:
        cluster = self._clusters.pop(name, None)
        if cluster:
            await cluster.poller.stop()
            await cluster.http.aclose()
            await cluster.bridge.close()

    async def close(self) -> None:
        for name in list(self._clusters):
            await self.remove(name)


registry = ClusterRegistry()
