"""Nodes: GRES strings read into GPUs, and the cache that reads a cluster's nodes at most once per interval."""

from __future__ import annotations

import asyncio

import pytest

from aifactory.slurm.errors import SlurmUnreachable
from aifactory.slurm.nodes import GpuGres, NodeCache, SlurmNode, parse_gpus


@pytest.mark.parametrize("gres, used, gpus", [
    ("", "", ()),
    ("(null)", "", ()),
    ("gpu:a100:4(S:0-1)", "gpu:a100:2(IDX:0-1)", (GpuGres("a100", 4, 2),)),
    ("gpu:4", "gpu:0(IDX:N/A)", (GpuGres(None, 4, 0),)),
    ("gpu:a100:2(S:0),gpu:v100:2(S:1),mps:200", "gpu:a100:1(IDX:0),gpu:v100:2(IDX:2,3),mps:0",
     (GpuGres("a100", 2, 1), GpuGres("v100", 2, 2))),
    ("gpu:fake1:1(S:0),gpu:fake2:1(S:0)", "gpu:fake1:0(IDX:N/A),gpu:fake2:0(IDX:N/A)",
     (GpuGres("fake1", 1, 0), GpuGres("fake2", 1, 0))),
    ("gpu:nvidia_a100-sxm4-80gb:8", "gpu:3", (GpuGres("nvidia_a100-sxm4-80gb", 8, 3),)),
    ("gpu", "", (GpuGres(None, 1, 0),)),
    ("mps:100,shard:8", "", ()),
])
def test_gpus_from_gres(gres, used, gpus):
    assert parse_gpus(gres, used) == gpus


class Nodes:
    """A bridge whose node reads are counted; `gate` holds a read until released."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.reads = 0
        self.gate: asyncio.Event | None = None

    async def nodes(self):
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


UP = SlurmNode("n1", "IDLE", cpus=4)
SILENT = SlurmNode("n1", "DOWN", ("NOT_RESPONDING",), cpus=4, reason="Not responding")


async def test_one_read_per_interval_whoever_asks():
    bridge = Nodes([UP])
    cache = NodeCache(bridge, interval=3600)
    for _ in range(5):
        assert [n.name for n in (await cache.current()).nodes] == ["n1"]
    assert bridge.reads == 1


async def test_concurrent_readers_share_one_read():
    bridge = Nodes([UP])
    bridge.gate = asyncio.Event()
    cache = NodeCache(bridge, interval=3600)
    readers = [asyncio.create_task(cache.current()) for _ in range(10)]
    await asyncio.sleep(0)
    bridge.gate.set()
    answers = await asyncio.gather(*readers)
    assert bridge.reads == 1 and all(a.nodes == answers[0].nodes for a in answers)


async def test_a_failed_read_keeps_the_nodes_says_why_and_waits_for_the_interval():
    bridge = Nodes([UP], SlurmUnreachable("slurmrestd at http://x unreachable: ConnectError"))
    cache = NodeCache(bridge, interval=0)
    first = await cache.current()
    second = await cache.current()
    assert second.nodes[0].name == "n1" and "unreachable" in second.error and second.read_at == first.read_at
    cache.interval = 3600
    await cache.current()
    assert bridge.reads == 2


async def test_last_contact_is_the_last_read_that_saw_the_node_respond():
    bridge = Nodes([UP], [SILENT])
    cache = NodeCache(bridge, interval=0)
    seen = (await cache.current()).nodes[0].last_contact
    silent = (await cache.current()).nodes[0]
    assert seen is not None and silent.last_contact == seen and not silent.available
    never = NodeCache(Nodes([SILENT]), interval=0)
    assert (await never.current()).nodes[0].last_contact is None
