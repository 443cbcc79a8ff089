"""Preflight: would this service's job run on its cluster? Checked without submitting anything.

`fit_problems` is pure: the job request against the partition and its nodes, with Slurm's own words for each
refusal (what slurmctld answers at submit, or the reason a job would wait for ever). `check` asks the cluster
(the partition, the nodes through their cache, and `sbatch --test-only` where the transport can run it) and
gives one answer that every face shows: the rendered script, the problems and, when Slurm gives one, its
estimate of the start. Used by the REST API's dry run and by the operator's dry-run annotation.
"""

from __future__ import annotations

import re

from aifactory.lifecycle import ServiceRef, job_request, now_rfc3339
from aifactory.models import AIServiceSpec, PreflightResult, Recipe, SlurmClusterSpec, TenantSpec
from aifactory.slurm.errors import SlurmError, SlurmUnreachable
from aifactory.slurm.jobs import JobRequest
from aifactory.slurm.nodes import SlurmNode
from aifactory.slurm.partitions import SlurmPartition

# Slurm's own words (slurmctld's error strings and pending reasons) for what a job cannot get.
NOT_AVAILABLE = "Requested node configuration is not available"
BAD_NODE_COUNT = "Node count specification invalid"
BAD_GRES = "Invalid generic resource (gres) specification"


def _expand_nodes(expression: str) -> set[str]:
    """The names in a simple Slurm node list ("vm", "n[01-03,07],gpu1"); enough to pick a partition's nodes."""
    names: set[str] = set()
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", expression or ""):
        if plain:
            names.add(plain)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            if high and low.isdigit() and high.isdigit():
                names.update(f"{prefix}{i:0{len(low)}d}" for i in range(int(low), int(high) + 1))
            else:
                names.add(f"{prefix}{low}")
    return names


def fit_problems(request: JobRequest, partition: SlurmPartition, nodes: list[SlurmNode]) -> list[str]:
    """Why Slurm would refuse the job, or keep it queued for ever, in this partition."""
    problems = []
    where = f"partition {partition.name}"
    if partition.state not in ("UP",):
        problems.append(f"PartitionDown: {where} is {partition.state}")
    limit = request.time_limit_minutes
    if limit and partition.max_time_minutes is not None and limit > partition.max_time_minutes:
        problems.append(f"PartitionTimeLimit: the time limit of {limit} min is above the MaxTime of {where} "
                        f"({partition.max_time_minutes} min); the job would wait for ever")
    count = request.nodes or 1
    most = min(n for n in (partition.max_nodes_per_job, partition.total_nodes) if n is not None) \
        if partition.max_nodes_per_job is not None or partition.total_nodes is not None else None
    if most is not None and count > most:
        problems.append(f"{BAD_NODE_COUNT}: {count} nodes asked for, {where} has {most}")
    for kind, name, allowed, denied in (("account", request.account, partition.allowed_accounts,
                                         partition.denied_accounts),
                                        ("QOS", request.qos, partition.allowed_qos, partition.denied_qos)):
        if name and ((allowed is not None and name not in allowed) or name in denied):
            problems.append(f"Job's {kind} not permitted to use this partition ({partition.name}): {name}")
    members = _expand_nodes(partition.nodes)
    mine = [n for n in nodes if partition.name in n.partitions or n.name in members]
    if mine:
        problems += _node_fit(request, mine, where)
    return problems


def _node_fit(request: JobRequest, nodes: list[SlurmNode], where: str) -> list[str]:
    problems = []
    cpus = max(n.cpus for n in nodes)
    if request.cpus_per_task and request.cpus_per_task > cpus:
        problems.append(f"{NOT_AVAILABLE}: {request.cpus_per_task} CPUs per task, the nodes of {where} have at "
                        f"most {cpus}")
    memory = max(n.memory_mb for n in nodes)
    if request.memory_per_node_mb and memory and request.memory_per_node_mb > memory:
        problems.append(f"{NOT_AVAILABLE}: {request.memory_per_node_mb} MB of memory per node, the nodes of {where} "
                        f"have at most {memory} MB")
    if request.gpus_per_node:
        gpus = max(sum(g.total for g in n.gpus) for n in nodes)
        if gpus == 0:
            problems.append(f"{BAD_GRES}: gpu:{request.gpus_per_node}, the nodes of {where} have no GPU")
        elif request.gpus_per_node > gpus:
            problems.append(f"{NOT_AVAILABLE}: {request.gpus_per_node} GPUs per node, the nodes of {where} have at "
                            f"most {gpus}")
    return problems


def _start_of(estimate: str | None) -> str | None:
    found = re.search(r" to start at (\S+)", estimate or "")
    return found.group(1) if found else None


def request_for(namespace: str, name: str, spec: AIServiceSpec, recipe: Recipe, cluster: SlurmClusterSpec,
                tenant: TenantSpec | None) -> JobRequest:
    """The job a dry run checks: the service's own, but Secret values never leave their Secrets for it (the
    script names the variables only). Raises SpecError."""
    placeholders = {key: f"<Secret {ref.name} key {ref.key}>" for key, ref in spec.secret_env.items()}
    return job_request(ServiceRef(namespace, name, "dry-run"), spec, recipe, cluster, tenant, placeholders)


def refused(message: str) -> PreflightResult:
    """The answer when no job can even be made of the spec."""
    return PreflightResult(ok=False, problems=[message], checked_at=now_rfc3339())


async def check(cluster, request: JobRequest, problems: list[str] | None = None) -> PreflightResult:
    """Ask the cluster about the job request; nothing is submitted. `problems`: found before (e.g. in the spec).

    Raises SlurmUnreachable when the cluster cannot be asked at all."""
    problems = list(problems or ())
    notes = []
    partition = None
    try:
        partition = await cluster.bridge.partition(request.partition)
    except SlurmUnreachable:
        raise
    except SlurmError as exc:
        problems.append(f"partition {request.partition or '(default)'}: {exc}")
    if partition is not None:
        listed = await cluster.nodes.current()
        problems += fit_problems(request, partition, listed.nodes)
        if not listed.nodes:
            notes.append(f"The nodes were not checked: {listed.error or 'none listed'}")
    estimate = None
    try:
        estimate = await cluster.bridge.test_submit(request)
    except SlurmUnreachable:
        raise
    except SlurmError as exc:
        problems.append(f"sbatch --test-only: {exc}")
    if estimate is None and not problems:
        notes.append("No start estimate: it needs `sbatch --test-only` on a login node, and this cluster is "
                     "reached over slurmrestd only (add ssh to the SlurmCluster)")
    if (request.account or request.qos) and estimate is None:
        notes.append("Account and QOS were checked against the partition's lists only; slurmctld checks them "
                     "against its accounting at submit")
    return PreflightResult(
        ok=not problems, problems=list(dict.fromkeys(problems)), notes=notes, script=request.script,
        partition=partition.name if partition else request.partition, account=request.account, qos=request.qos,
        cpus_per_task=request.cpus_per_task, memory_per_node_mb=request.memory_per_node_mb,
        gpus_per_node=request.gpus_per_node, time_limit_minutes=request.time_limit_minutes, nodes=request.nodes,
        environment=sorted(request.environment), slurm_estimate=estimate, expected_start=_start_of(estimate),
        checked_at=now_rfc3339())
