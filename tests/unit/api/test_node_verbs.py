"""The nodes verbs below every face: GPU devices named by the site's gpuTypes, node ids, one read shared by all."""

from __future__ import annotations

import httpx
import pytest

from aifactory.api.errors import NotFound, ServiceNotAvailable
from aifactory.api.nodes import gpu_devices, node_id, split_node_id
from aifactory.clusters import Cluster, ClusterRegistry
from aifactory.models import GpuType, SlurmClusterSpec
from aifactory.slurm.errors import SlurmUnreachable
from aifactory.slurm.nodes import GpuGres, SlurmNode
from tests.unit.api.memory import make_api

A01 = SlurmNode("gpu-a01", "MIXED", cpus=64, cpus_allocated=16, memory_mb=512000,
                gpus=(GpuGres("a100", 2, 1), GpuGres("l4", 1, 0)))
VM = SlurmNode("vm", "IDLE", cpus=2, memory_mb=22900)


def test_gpu_devices_are_named_by_the_sites_types_and_never_made_up():
    devices = gpu_devices(A01, {"a100": GpuType(name="NVIDIA A100-SXM4-80GB", memory="80G")})
    assert [(d.name, d.memory_mb, d.in_use) for d in devices] == [
        ("NVIDIA A100-SXM4-80GB", 81920, True), ("NVIDIA A100-SXM4-80GB", 81920, False), ("l4", None, False)]
    assert gpu_devices(VM, {}) == ()
    untyped = SlurmNode("n", gpus=(GpuGres(None, 1, 0),))
    assert gpu_devices(untyped, {})[0].name == "GPU"


def test_node_ids():
    assert node_id("default", "vm") == "vm" and split_node_id("vm") == ("default", "vm")
    assert node_id("hpc", "gpu-a01") == "hpc:gpu-a01" and split_node_id("hpc:gpu-a01") == ("hpc", "gpu-a01")


class NodesBridge:
    api_version = "v0.0.40"
    requests_sent = 0

    def __init__(self, nodes):
        self.answer = nodes
        self.reads = 0

    async def nodes(self):
        self.reads += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def http_transport(self):
        return httpx.AsyncHTTPTransport()

    async def close(self):
        pass


def with_cluster(api, bridge, name: str = "default", **spec):
    """The API's registry holding `bridge` for SlurmCluster `name` (as the store describes it)."""
    state = api.client.app.state.aifactory
    obj = api.store.clusters.named(name)
    parsed = SlurmClusterSpec.model_validate({**obj["spec"], **spec})
    api.store.clusters.put(api.store._stamp({**obj, "metadata": dict(obj["metadata"]), "spec": parsed.wire()}))
    registry = state._clusters = ClusterRegistry(with_pollers=False)
    registry._clusters[name] = Cluster(name, parsed, bridge, None, http=httpx.AsyncClient())
    return state


@pytest.fixture
def api():
    return make_api()


async def test_all_readers_share_one_read_per_interval(api):
    bridge = NodesBridge([A01, VM])
    state = with_cluster(api, bridge, gpuTypes={"a100": {"name": "NVIDIA A100", "memory": "80G"}})
    for _ in range(3):
        views = await state.nodes.all()
    assert [v.id for v in views] == ["gpu-a01", "vm"] and bridge.reads == 1
    assert views[0].devices[0].name == "NVIDIA A100" and views[1].devices == ()
    assert (await state.nodes.get("vm")).node.cpus == 2
    with pytest.raises(NotFound):
        await state.nodes.get("nope")
    with pytest.raises(NotFound):
        await state.nodes.get("other:vm")


async def test_nodes_never_read_say_slurms_words(api):
    state = with_cluster(api, NodesBridge(SlurmUnreachable("slurmrestd at http://x unreachable: ConnectError")))
    with pytest.raises(ServiceNotAvailable, match="unreachable: ConnectError"):
        await state.nodes.all()
