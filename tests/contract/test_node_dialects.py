"""Each dialect reads a cluster's nodes: the real 22.05 answers (idle, running a job, drained) and the constructed
answers of the newer versions (GPUs in GRES, drained, down and not responding); both transports ask once for all."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from aifactory.slurm.cli import CliBridge, dialect_of_answer
from aifactory.slurm.dialects import SUPPORTED, dialect_for
from aifactory.slurm.nodes import GpuGres, summarize
from aifactory.slurm.rest import RestBridge
from aifactory.slurm.ssh import CommandResult
from aifactory.slurm.tokens import StaticToken

RECORDINGS = Path(__file__).parent / "recordings"
NEW = [v for v in SUPPORTED if v != "v0.0.38"]


def answer(version: str, name: str = "nodes") -> dict:
    return json.loads((RECORDINGS / version / f"{name}.json").read_text())["body"]


def test_v0038_real_answers_idle_busy_drained():
    dialect = dialect_for("v0.0.38")
    (idle,) = dialect.nodes(answer("v0.0.38"))
    assert (idle.name, idle.state, idle.flags, idle.address) == ("vm", "IDLE", (), "127.0.0.1")
    assert (idle.cpus, idle.cpus_allocated, idle.memory_mb) == (2, 0, 22900)
    assert idle.memory_free_mb == 18727 and idle.boot_time == 1795985995 and idle.partitions == ("debug",)
    assert idle.gpus == () and idle.available and idle.reason == "" and idle.reason_time is None
    (busy,) = dialect.nodes(answer("v0.0.38", "nodes_busy"))
    assert (busy.state, busy.cpus_allocated, busy.memory_allocated_mb) == ("MIXED", 1, 1024) and busy.available
    (drained,) = dialect.nodes(answer("v0.0.38", "nodes_drained"))
    assert drained.flags == ("DRAIN",) and drained.state_text == "MIXED+DRAIN" and not drained.available
    assert drained.reason == "e2e maintenance" and drained.reason_time == 1795987627
    assert drained.responding  # drained is not silent


@pytest.mark.parametrize("version", NEW)
def test_newer_versions_gpus_drained_and_down(version):
    a01, a02, b01 = dialect_for(version).nodes(answer(version))
    assert (a01.state, a01.flags, a01.cpus, a01.cpus_allocated) == ("MIXED", (), 64, 16)
    assert a01.gpus == (GpuGres("a100", 4, 2),) and a01.memory_free_mb == 401000
    assert a01.boot_time == 1795400000 and a01.cpu_load == 12.5 and a01.available
    assert a02.flags == ("DRAIN",) and not a02.available and a02.reason == "bad DIMM"
    assert a02.reason_time == 1795430000
    assert b01.state_text == "DOWN+NOT_RESPONDING" and not b01.responding and b01.memory_free_mb is None
    summary = summarize([a01, a02, b01])
    assert (summary.total, summary.up, summary.gpus, summary.gpus_free) == (3, 1, 8, 2)


def test_cli_answers_name_their_dialect():
    # 22.05's sinfo --json says openapi/v0.0.38; newer scontrol --json names the data_parser.
    assert dialect_of_answer(answer("v0.0.38")).version == "v0.0.38"
    assert dialect_of_answer(answer("v0.0.42")).version == "v0.0.42"
    unnamed = {"nodes": [{"name": "n1", "state": ["IDLE"]}]}
    assert dialect_of_answer(unnamed).nodes(unnamed)[0].state == "IDLE"


async def test_rest_bridge_reads_all_nodes_in_one_request():
    seen = []

    def slurmrestd(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json=answer("v0.0.40"))

    bridge = RestBridge("http://slurmrestd.test", "root", StaticToken("t"), api_version="v0.0.40",
                        transport=httpx.MockTransport(slurmrestd))
    nodes = await bridge.nodes()
    await bridge.close()
    assert [n.name for n in nodes] == ["gpu-a01", "gpu-a02", "cpu-b01"]
    assert seen == ["/slurm/v0.0.40/nodes"] and bridge.requests_sent == 1


class LoginNode:
    def __init__(self, result: CommandResult):
        self.result = result
        self.ran: list = []

    async def run(self, argv, **_):
        self.ran.append(argv)
        return self.result

    async def close(self):
        pass


async def test_cli_bridge_reads_all_nodes_in_one_command():
    login = LoginNode(CommandResult(0, json.dumps(answer("v0.0.38")), ""))
    nodes = await CliBridge(login).nodes()
    assert [n.name for n in nodes] == ["vm"] and login.ran == [CliBridge.NODES_LINE]


async def test_cli_bridge_says_slurms_words_when_it_fails():
    from aifactory.slurm.errors import SlurmUnreachable

    login = LoginNode(CommandResult(1, "", "scontrol: error: Unable to contact slurm controller (connect failure)"))
    with pytest.raises(SlurmUnreachable, match="Unable to contact slurm controller"):
        await CliBridge(login).nodes()


@pytest.mark.parametrize("version", SUPPORTED)
def test_a_pinned_job_names_its_node_in_each_dialect(version):
    from tests.contract.conftest import make_request

    job = dialect_for(version).submit_body(make_request(nodelist="gpu-a[01-02]"))["job"]
    if version == "v0.0.38":
        assert job["nodelist"] == "gpu-a[01-02]"  # the real 22.05 refuses `required_nodes` ("Disabled key")
    else:
        assert job["required_nodes"] == ["gpu-a[01-02]"] and "nodelist" not in job
    assert "nodelist" not in dialect_for(version).submit_body(make_request())["job"]


def test_sbatch_pins_with_nodelist():
    from aifactory.slurm.cli import sbatch_argv
    from tests.contract.conftest import make_request

    assert "--nodelist=vm" in sbatch_argv(make_request(nodelist="vm"))
