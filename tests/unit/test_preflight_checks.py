"""Preflight: partitions read from every shape Slurm gives them, and the job request checked against them."""

import pytest

from aifactory.preflight import _expand_nodes, fit_problems
from aifactory.slurm.cli import parse_test_only
from aifactory.slurm.errors import SlurmError
from aifactory.slurm.jobs import JobRequest
from aifactory.slurm.nodes import GpuGres, SlurmNode
from aifactory.slurm.partitions import SlurmPartition, from_rest, from_scontrol, pick_partition
from aifactory.slurm.ssh import CommandResult

# The local Slurm 22.05's answers (slurmrestd v0.0.38 GET /partition/debug, trimmed; scontrol --oneliner).
REST_0038 = {
    "flags": ["default"], "allowed_accounts": "", "allowed_qos": "", "denied_accounts": "", "denied_qos": "",
    "maximum_memory_per_node": None, "maximum_nodes_per_job": -1, "max_time_limit": -1, "name": "debug",
    "nodes": "vm", "state": "UP", "total_cpus": 2, "total_nodes": 1}
SCONTROL = ("PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A "
            "DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED "
            "MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=vm PriorityJobFactor=1 "
            "PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP "
            "TotalCPUs=2 TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED "
            "MaxMemPerNode=UNLIMITED TRES=cpu=2,mem=22900M,node=1,billing=2")
# The v0.0.39+ shape, as documented (nested objects, {set, infinite, number} numbers).
REST_NESTED = {
    "name": "gpu", "partition": {"state": ["UP"]}, "nodes": {"configured": "g[01-04]", "total": 4},
    "cpus": {"total": 256}, "maximums": {"time": {"set": True, "infinite": False, "number": 1440},
                                         "nodes": {"set": True, "infinite": False, "number": 2}},
    "accounts": {"allowed": "proj1,proj2", "deny": ""}, "qos": {"allowed": "", "deny": "debug"},
    "defaults": {"job": []}, "flags": []}


def test_partitions_read_alike_from_rest_and_scontrol():
    rest, cli = from_rest(REST_0038), from_scontrol(SCONTROL)
    assert rest == cli == SlurmPartition(name="debug", state="UP", default=True, nodes="vm", total_nodes=1,
                                         total_cpus=2)
    nested = from_rest(REST_NESTED)
    assert (nested.name, nested.state, nested.nodes, nested.max_time_minutes, nested.max_nodes_per_job) == (
        "gpu", "UP", "g[01-04]", 1440, 2)
    assert nested.allowed_accounts == ("proj1", "proj2") and nested.denied_qos == ("debug",)
    assert from_scontrol("PartitionName=p MaxTime=1-02:30:00 State=DOWN").max_time_minutes == 26 * 60 + 30


def test_the_default_partition_is_picked_and_an_unknown_one_has_slurms_words():
    parts = [from_rest({**REST_0038, "name": "other", "flags": []}), from_rest(REST_0038)]
    assert pick_partition(parts, None).name == "debug"
    with pytest.raises(SlurmError, match="Invalid partition name specified"):
        pick_partition(parts, "nope")


def request(**over) -> JobRequest:
    fields = dict(name="ais-default-x", script="#!/bin/bash\n", environment={}, working_directory="/w",
                  standard_output="/w/o", standard_error="/w/e", partition="gpu", account="proj1", cpus_per_task=8,
                  memory_per_node_mb=32768, gpus_per_node=1, time_limit_minutes=60, nodes=1)
    fields.update(over)
    return JobRequest(**fields)


NODES = [SlurmNode(name=f"g0{i}", partitions=("gpu",), cpus=64, memory_mb=512_000,
                   gpus=(GpuGres(type="a100", total=4),)) for i in range(1, 5)]


def test_a_job_that_fits_has_no_problem():
    assert fit_problems(request(), from_rest(REST_NESTED), NODES) == []


@pytest.mark.parametrize("over, words", [
    ({"time_limit_minutes": 2000}, "PartitionTimeLimit: the time limit of 2000 min is above the MaxTime"),
    ({"nodes": 3}, "Node count specification invalid: 3 nodes asked for, partition gpu has 2"),
    ({"cpus_per_task": 128}, "Requested node configuration is not available: 128 CPUs per task"),
    ({"memory_per_node_mb": 1_000_000}, "Requested node configuration is not available: 1000000 MB"),
    ({"gpus_per_node": 8}, "Requested node configuration is not available: 8 GPUs per node"),
    ({"account": "other"}, "Job's account not permitted to use this partition (gpu): other"),
    ({"qos": "debug"}, "Job's QOS not permitted to use this partition (gpu): debug"),
])
def test_what_slurm_would_refuse_is_said_in_its_words(over, words):
    problems = fit_problems(request(**over), from_rest(REST_NESTED), NODES)
    assert len(problems) == 1 and problems[0].startswith(words), problems


def test_gpus_on_a_partition_without_any_and_a_down_partition():
    cpu_nodes = [SlurmNode(name="vm", partitions=("debug",), cpus=2, memory_mb=22900)]
    problems = fit_problems(request(partition="debug", account=None, cpus_per_task=1, memory_per_node_mb=100),
                            from_scontrol(SCONTROL.replace("State=UP", "State=DOWN")), cpu_nodes)
    assert problems == ["PartitionDown: partition debug is DOWN",
                        "Invalid generic resource (gres) specification: gpu:1, the nodes of partition debug have "
                        "no GPU"]


def test_node_lists_expand():
    assert _expand_nodes("g[01-03,07],vm") == {"g01", "g02", "g03", "g07", "vm"}


def test_sbatch_test_only_answers():
    ok = CommandResult(0, "", "sbatch: Job 101 to start at 2026-11-29T22:27:19 using 1 processors on nodes vm in "
                              "partition debug\n")
    assert parse_test_only(ok).startswith("Job 101 to start at 2026-11-29T22:27:19")
    refused = CommandResult(1, "", "sbatch: error: invalid partition specified: nope\n"
                                   "allocation failure: Invalid partition name specified\n")
    with pytest.raises(SlurmError, match="Invalid partition name specified"):
        parse_test_only(refused)
