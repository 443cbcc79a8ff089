"""The cluster's nodes through the Slurm bridge on the real local Slurm: every transport reads the same node that
`scontrol show node` describes, in one request; the SlurmCluster's status and `kubectl get slc` show the summary."""

from __future__ import annotations

import json
import re
import time

import pytest

from aifactory.slurm.connect import bridge_for
from aifactory.slurm.nodes import NodeCache

from test_ssh_transports import cluster_spec, reader, secrets_of


def scontrol_node(stack) -> dict[str, str]:
    """`scontrol show node <name> --oneliner` as key=value pairs: what Slurm itself says about the node."""
    text = stack.slurm._run(["scontrol", "show", "node", stack.slurm.node_name, "--oneliner"]).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


@pytest.mark.parametrize("transport", ["rest", "ssh-tunnel", "ssh-cli"])
async def test_every_transport_reads_the_node_slurm_describes(stack, login_node, transport):
    spec = cluster_spec(stack, login_node, transport, tokenSecretRef={"name": "jwt"})
    bridge = await bridge_for(spec, reader(secrets_of(login_node, stack.token)))
    try:
        cache = NodeCache(bridge, interval=3600)
        before = bridge.requests_sent
        nodes = (await cache.current()).nodes
        await cache.current()
        # One request for all nodes (REST may add one for version detection), and none for the second read.
        assert bridge.requests_sent - before <= (2 if transport != "ssh-cli" else 1)
    finally:
        await bridge.close()
    slurm = scontrol_node(stack)
    (node,) = [n for n in nodes if n.name == stack.slurm.node_name]
    assert node.cpus == int(slurm["CPUTot"]) and node.memory_mb == int(slurm["RealMemory"])
    assert node.cpus_allocated == int(slurm["CPUAlloc"]) and node.state_text == slurm["State"]
    assert node.gpus == () and slurm["Gres"] == "(null)"  # no GPU here, and none is made up
    assert node.boot_time and node.last_contact and node.available


def test_slurmcluster_status_and_kubectl_show_the_node_summary(stack):
    deadline = time.monotonic() + 60
    nodes = None
    while time.monotonic() < deadline:
        obj = json.loads(stack.kubectl("get", "slc", "default", "-o", "json").stdout)
        nodes = (obj.get("status") or {}).get("nodes")
        if nodes == {"total": 1, "up": 1, "gpus": 0, "gpusFree": 0}:  # (another test may just have resumed it)
            break
        time.sleep(1)
    assert nodes == {"total": 1, "up": 1, "gpus": 0, "gpusFree": 0}
    table = stack.kubectl("get", "slc", "default").stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header[:6] == ["NAME", "URL", "API", "REACHABLE", "NODES-UP", "GPUS-FREE"]
    assert row[4:6] == ["1", "0"]
