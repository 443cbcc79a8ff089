"""Each dialect reads a cluster's nodes: the real answers of 22.05, 24.11 and 26.05 in every version they serve
(idle, running a job, drained) and constructed answers with what no node here has (GPUs in GRES, down and not
responding); both transports ask once for all."""

from __future__ import annotations

import json

import httpx
import pytest

from aifactory.slurm.cli import CliBridge, dialect_of_answer
from aifactory.slurm.dialects import SUPPORTED, dialect_for
from aifactory.slurm.nodes import GpuGres, summarize
from aifactory.slurm.rest import RestBridge
from aifactory.slurm.ssh import CommandResult
from aifactory.slurm.tokens import StaticToken

from recorded import RECORDINGS, exchange, recorded_sets, set_id

REAL = recorded_sets()
# Constructed: GPUs, drained, down and not responding (v0.0.39's beside its other constructed answers).
GPUS = {"v0.0.39": RECORDINGS / "constructed-v0.0.39",
        **{d.name: d for d in sorted((RECORDINGS / "constructed-gpus").glob("v0.0.*"))}}


def answer(version: str, name: str = "nodes", release: str = "22.05") -> dict:
    return exchange(release, version, name)["body"]


def constructed(version: str) -> dict:
    return json.loads((GPUS[version] / "nodes.json").read_text())["body"]


def test_v0038_real_answers_idle_busy_drained():
    dialect = dialect_for("v0.0.38")
    (idle,) = dialect.nodes(answer("v0.0.38"))
    assert (idle.state, idle.flags, idle.address) == ("IDLE", (), "127.0.0.1")
    assert (idle.cpus, idle.cpus_allocated) == (2, 0) and idle.memory_mb > idle.memory_free_mb > 0
    assert idle.boot_time > 1_700_000_000 and idle.partitions == ("debug",)
    assert idle.gpus == () and idle.available and idle.reason == "" and idle.reason_time is None
    (busy,) = dialect.nodes(answer("v0.0.38", "nodes_busy"))
    assert (busy.state, busy.cpus_allocated, busy.memory_allocated_mb) == ("MIXED", 1, 1024) and busy.available
    (drained,) = dialect.nodes(answer("v0.0.38", "nodes_drained"))
    assert drained.flags == ("DRAIN",) and drained.state_text == "MIXED+DRAIN" and not drained.available
    assert drained.reason == "e2e maintenance" and drained.reason_time > 1_700_000_000
    assert drained.responding  # drained is not silent


@pytest.mark.parametrize("release,version", REAL, ids=[set_id(*s) for s in REAL])
def test_real_answers_idle_busy_drained_in_every_version(release, version):
    dialect = dialect_for(version)
    (idle,) = dialect.nodes(answer(version, "nodes", release))
    assert (idle.state, idle.flags, idle.address, idle.cpus, idle.cpus_allocated) == ("IDLE", (), "127.0.0.1", 2, 0)
    assert idle.available and idle.gpus == () and idle.partitions == ("debug",) and idle.memory_mb > 0
    (busy,) = dialect.nodes(answer(version, "nodes_busy", release))
    assert busy.state in ("MIXED", "ALLOCATED") and busy.cpus_allocated >= 1 and busy.available
    (drained,) = dialect.nodes(answer(version, "nodes_drained", release))
    assert "DRAIN" in drained.flags and not drained.available and drained.reason == "e2e maintenance"
    assert drained.responding


@pytest.mark.parametrize("version", sorted(GPUS))
def test_constructed_gpus_drained_and_down(version):
    a01, a02, b01 = dialect_for(version).nodes(constructed(version))
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
    assert dialect_of_answer(answer("v0.0.42", release="24.11")).version == "v0.0.42"
    assert dialect_of_answer(answer("v0.0.45", release="26.05")).version == "v0.0.45"
    unnamed = {"nodes": [{"name": "n1", "state": ["IDLE"]}]}
    assert dialect_of_answer(unnamed).nodes(unnamed)[0].state == "IDLE"


async def test_rest_bridge_reads_all_nodes_in_one_request():
    seen = []

    def slurmrestd(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json=constructed("v0.0.40"))

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
