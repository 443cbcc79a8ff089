"""The one way to reach a Slurm cluster, shared by the operator and the REST API.

A SlurmCluster resource becomes a `Cluster`: its bridge (transport, dialect, token), the HTTP client of its data
plane (through SSH when the cluster is behind a login node), and, in the operator only, its one job poller.
Secrets are read through the same reader in both processes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from kubernetes import client as k8s

from aifactory.models import SecretKeyRef, SlurmClusterSpec
from aifactory.slurm.bridge import SlurmBridge
from aifactory.slurm.connect import bridge_for
from aifactory.slurm.nodes import NodeCache
from aifactory.slurm.poller import JobPoller

log = logging.getLogger(__name__)

SecretReader = Callable[[SecretKeyRef], Awaitable[str]]


class ClusterNotReady(LookupError):
    """The SlurmCluster is not known (yet), or cannot be connected."""


class SecretMissing(LookupError):
    """A Secret, or a key of it, that a resource names does not exist. The message names it, never its data."""


async def read_secret_key(core: k8s.CoreV1Api, name: str, namespace: str, key: str) -> str:
    """One key of a Secret, exactly as stored (UTF-8 text)."""
    def read() -> str:
        try:
            secret = core.read_namespaced_secret(name, namespace)
        except k8s.ApiException as exc:
            if exc.status == 404:
                raise SecretMissing(f"Secret {namespace}/{name} not found") from None
            raise
        data = (secret.data or {}).get(key)
        if data is None:
            raise SecretMissing(f"Secret {namespace}/{name} has no key {key!r}")
        try:
            return base64.b64decode(data).decode()
        except UnicodeDecodeError:
            raise SecretMissing(f"Secret {namespace}/{name} key {key!r} is not UTF-8 text") from None

    return await asyncio.to_thread(read)


def secret_reader(core: k8s.CoreV1Api, default_namespace: str) -> SecretReader:
    """How SlurmClusters' Secret references are read: their namespace, else `default_namespace`. Tokens and keys
    lose surrounding white space (a file put into a Secret often ends with a newline)."""
    async def read(ref: SecretKeyRef) -> str:
        return (await read_secret_key(core, ref.name, ref.namespace or default_namespace, ref.key)).strip()
    return read


@dataclass
class Cluster:
    name: str
    spec: SlurmClusterSpec
    bridge: SlurmBridge
    poller: JobPoller | None
    # The data plane: reaches services at node:port the way this cluster is reached (through SSH when it is).
    http: httpx.AsyncClient
    # The cluster's nodes, read at most once per spec.node_poll_interval_seconds, only when someone reads them.
    nodes: NodeCache | None = None

    def __post_init__(self) -> None:
        if self.nodes is None:
            self.nodes = NodeCache(self.bridge, self.spec.node_poll_interval_seconds)


class ClusterRegistry:
    """The clusters one process knows, by SlurmCluster name; rebuilt when a spec changes.

    `with_pollers`: the operator polls each cluster (one request per interval for all its services); the REST
    API reads the statuses the operator writes and asks Slurm only for what a request needs (logs). Both read
    nodes through each cluster's NodeCache (one request for all nodes, at most once per node interval).
    """

    def __init__(self, read_secret: SecretReader | None = None, *, http_timeout: httpx.Timeout | float = 2.0,
                 with_pollers: bool = True):
        self.read_secret = read_secret
        self.http_timeout = http_timeout
        self.with_pollers = with_pollers
        self._clusters: dict[str, Cluster] = {}
        self._lock = asyncio.Lock()

    def get(self, name: str) -> Cluster:
        try:
            return self._clusters[name]
        except KeyError:
            raise ClusterNotReady(f"SlurmCluster '{name}' is not known (yet)") from None

    def all(self) -> list[Cluster]:
        return list(self._clusters.values())

    async def put(self, name: str, spec: SlurmClusterSpec) -> Cluster:
        """The cluster for this spec: the one known when its spec is the same, else a new one."""
        async with self._lock:
            old = self._clusters.get(name)
            if old and old.spec == spec:
                return old
            if self.read_secret is None:
                raise ClusterNotReady("no way to read Secrets was given")
            bridge = await bridge_for(spec, self.read_secret)
            poller = JobPoller(bridge, spec.poll_interval_seconds) if self.with_pollers else None
            if old:
                if poller is not None and old.poller is not None:
                    # Keep what the old poller knew so that no service loses its job's last state.
                    poller.jobs = dict(old.poller.jobs)
                await self._close(old)
            cluster = Cluster(name, spec, bridge, poller,
                              http=httpx.AsyncClient(transport=bridge.http_transport(), timeout=self.http_timeout,
                                                     trust_env=False))
            self._clusters[name] = cluster
        if poller is not None:
            poller.start()
            log.info("SlurmCluster %s: polling %r every %.1fs", name, bridge, spec.poll_interval_seconds)
        return cluster

    async def remove(self, name: str) -> None:
        async with self._lock:
            cluster = self._clusters.pop(name, None)
        if cluster:
            await self._close(cluster)

    @staticmethod
    async def _close(cluster: Cluster) -> None:
        if cluster.poller is not None:
            await cluster.poller.stop()
        await cluster.http.aclose()
        await cluster.bridge.close()

    async def close(self) -> None:
        for name in list(self._clusters):
            await self.remove(name)
