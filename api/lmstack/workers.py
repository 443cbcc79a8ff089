"""/api/workers: LMStack's workers are the Slurm clusters' nodes; a worker's containers are the jobs on it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from aifactory.api.deps import Caller, Management, StateDep, StoreDep
from aifactory.api.lmstack import words
from aifactory.api.lmstack.deployments import _recipe, deployment
from aifactory.api.lmstack.errors import ERRORS
from aifactory.api.lmstack.schemas import Container, ContainerList, SystemInfo, Worker, WorkerDetail, WorkerList
from aifactory.api.nodes import NodeView

router = APIRouter(prefix="/api/workers", tags=["lmstack"], dependencies=[Management], responses=ERRORS)

MIB = 1024 * 1024
WorkerId = Annotated[str, Path(max_length=253, description="The node's name (`<cluster>:<node>` off the default "
                                                           "cluster)")]


def worker(view: NodeView) -> dict:
    node = view.node
    return {"id": view.id, "name": node.name, "status": "online" if node.available else "offline",
            "gpu_info": words.gpu_info(view), "last_heartbeat": words.stamp(node.last_contact),
            "cluster": view.cluster, "state": node.state_text, "reason": node.reason or None}


def on_node(objects: list[dict], view: NodeView) -> list[dict]:
    """The services whose job runs (or is pinned to run) on this node."""
    return [o for o in objects
            if ((o.get("spec") or {}).get("cluster") or "default") == view.cluster
            and ((o.get("status") or {}).get("node") or (o.get("spec") or {}).get("nodelist")) == view.node.name]


@router.get("", response_model=WorkerList, summary="List Workers")
async def list_workers(state: StateDep, store: StoreDep) -> WorkerList:
    """Every node of every SlurmCluster, read with one request per cluster at most once per its node interval."""
    return WorkerList(items=[Worker(**worker(v)) for v in await state.nodes.all()])


@router.get("/{worker_id}", response_model=WorkerDetail, summary="Get Worker")
async def get_worker(worker_id: WorkerId, state: StateDep, store: StoreDep, caller: Caller) -> WorkerDetail:
    view = await state.nodes.get(worker_id)
    node = view.node
    system = SystemInfo(cpu_count=node.cpus, memory_total=node.memory_mb * MIB, cpu_allocated=node.cpus_allocated,
                        memory_free=node.memory_free_mb * MIB if node.memory_free_mb is not None else None,
                        memory_allocated=node.memory_allocated_mb * MIB, boot_time=words.stamp(node.boot_time))
    catalog = store.catalog()
    return WorkerDetail(**worker(view), system_info=system,
                        deployments=[deployment(o, catalog) for o in on_node(state.services.visible(caller), view)])


@router.get("/{worker_id}/containers", response_model=ContainerList, summary="Get Worker Containers")
async def get_worker_containers(worker_id: WorkerId, state: StateDep, store: StoreDep,
                                caller: Caller) -> ContainerList:
    """The Slurm jobs of the caller's deployments on this node (other tenants' and users' jobs are not shown)."""
    view = await state.nodes.get(worker_id)
    catalog = store.catalog()
    containers = []
    for obj in on_node(state.services.visible(caller), view):
        job_id = (obj.get("status") or {}).get("jobId")
        if job_id and (obj.get("status") or {}).get("node") == view.node.name:
            recipe = _recipe(catalog, (obj.get("spec") or {}).get("recipe") or "")
            containers.append(Container(id=job_id, name=obj["metadata"]["name"], status=words.container_state(obj),
                                        image=words.image(recipe)))
    return ContainerList(containers=containers)
