"""The cluster's nodes, once, below every face: LMStack's workers, training's system info, llamactl's devices.

Nodes come from each SlurmCluster's NodeCache (aifactory.slurm.nodes): one request for all nodes of a cluster, at
most once per `nodePollIntervalSeconds`, made only when a request reads nodes; every face and every caller share
that read. GPU names and memory come from the SlurmCluster's `gpuTypes` (Slurm knows only GRES types); a node
without GPUs has no devices, and none is made up.

Nodes are the site's machines, not a tenant's: every caller with a key may read them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aifactory.api.errors import NotFound, ServiceNotAvailable
from aifactory.clusters import ClusterNotReady
from aifactory.models import GpuType, SlurmClusterSpec
from aifactory.slurm.jobs import memory_mb
from aifactory.slurm.nodes import NodeList, SlurmNode

log = logging.getLogger(__name__)

DEFAULT_CLUSTER = "default"
ID_SEPARATOR = ":"  # node ids: `<node>` on the default cluster, `<cluster>:<node>` on the others


class NodeOffline(ServiceNotAvailable):
    """A job cannot be placed on this node now: it is down, drained, failing or not responding."""

    def __init__(self, view: "NodeView"):
        node = view.node
        why = f": {node.reason}" if node.reason else ""
        super().__init__(f"Node {view.id} cannot take jobs (Slurm state {node.state_text}{why})", retry_after=None)
        self.view = view


@dataclass(frozen=True)
class GpuDevice:
    """One GPU of a node."""

    name: str  # the site's model name for its GRES type, else the GRES type, else "GPU"
    memory_mb: int | None  # from the SlurmCluster's gpuTypes; None when the site did not say
    gres_type: str | None
    in_use: bool


@dataclass(frozen=True)
class NodeView:
    """A node of one cluster as the faces show it."""

    cluster: str
    node: SlurmNode
    devices: tuple[GpuDevice, ...]
    read_at: float | None

    @property
    def id(self) -> str:
        return node_id(self.cluster, self.node.name)


def node_id(cluster: str, node: str) -> str:
    return node if cluster == DEFAULT_CLUSTER else f"{cluster}{ID_SEPARATOR}{node}"


def split_node_id(value: str) -> tuple[str, str]:
    """`vm` -> (default, vm); `hpc:gpu-a01` -> (hpc, gpu-a01)."""
    cluster, sep, node = value.rpartition(ID_SEPARATOR)
    return (cluster, node) if sep and cluster else (DEFAULT_CLUSTER, value)


def gpu_devices(node: SlurmNode, gpu_types: dict[str, GpuType]) -> tuple[GpuDevice, ...]:
    """One device per GPU the node's GRES declares, named by the site's gpuTypes."""
    devices = []
    for gres in node.gpus:
        known = gpu_types.get(gres.type) if gres.type else None
        name = known.name if known else (gres.type or "GPU")
        memory = memory_mb(known.memory) if known and known.memory else None
        devices += [GpuDevice(name, memory, gres.type, in_use=i < gres.used) for i in range(gres.total)]
    return tuple(devices)


class NodeVerbs:
    def __init__(self, state) -> None:
        self.state = state

    def cluster_names(self) -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.state.store.clusters.objects())

    async def read(self, cluster_name: str) -> tuple[NodeList, SlurmClusterSpec]:
        """The cluster's nodes through its cache (a Slurm request only when the last read is old enough)."""
        cluster = await self.state.cluster(cluster_name)
        return await cluster.nodes.current(), cluster.spec

    async def of_cluster(self, cluster_name: str) -> list[NodeView]:
        """The nodes of one cluster; 503 in Slurm's words when they were never read."""
        nodes, spec = await self.read(cluster_name)
        if nodes.read_at is None:
            raise ServiceNotAvailable(f"The nodes of SlurmCluster {cluster_name} cannot be read: "
                                      f"{nodes.error or 'no answer yet'}",
                                      retry_after=int(spec.node_poll_interval_seconds))
        return [NodeView(cluster_name, n, gpu_devices(n, spec.gpu_types), nodes.read_at) for n in nodes.nodes]

    async def all(self) -> list[NodeView]:
        """The nodes of every SlurmCluster; a cluster whose nodes cannot be read is left out (and logged), unless
        it is the only one, then the error is the answer."""
        names = self.cluster_names()
        answers = await asyncio.gather(*(self.of_cluster(n) for n in names), return_exceptions=True)
        views: list[NodeView] = []
        failures = []
        for name, answer in zip(names, answers):
            if isinstance(answer, (ServiceNotAvailable, ClusterNotReady)):
                log.warning("nodes of SlurmCluster %s left out: %s", name, answer)
                failures.append(answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                views += answer
        if failures and not views:
            raise failures[0]
        return views

    async def get(self, value: str) -> NodeView:
        cluster, name = split_node_id(value)
        if cluster not in self.cluster_names():
            raise NotFound(f"Node {value} not found")
        found = next((v for v in await self.of_cluster(cluster) if v.node.name == name), None)
        if found is None:
            raise NotFound(f"Node {value} not found")
        return found

    async def available(self, value: str) -> NodeView:
        """The node, when it can take a job now; NodeOffline (503) otherwise."""
        view = await self.get(value)
        if not view.node.available:
            raise NodeOffline(view)
        return view
