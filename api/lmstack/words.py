"""The one table between the core's words and LMStack's: phases, ids, times, GPUs, containers."""

from __future__ import annotations

import time
from urllib.parse import urlparse

from aifactory.api.nodes import NodeView
from aifactory.models import Recipe

# AIService phase -> LMStack deployment status.
STATUS_OF_PHASE = {
    "pending": "pending",
    "building": "downloading",  # an image pulled or built before the service starts
    "starting": "starting",
    "running": "running",
    "completed": "stopped",
    "cancelled": "stopped",
    "stopped": "stopped",
    "failed": "error",
}
BEING_DELETED = "stopping"
STATUSES = sorted({*STATUS_OF_PHASE.values(), BEING_DELETED})

# AIService phase -> the state LMStack shows for a container (Docker's words) of a job on a worker.
CONTAINER_STATE_OF_PHASE = {"pending": "created", "building": "created", "starting": "running",
                            "running": "running"}
EXITED = "exited"

# LMStack config keys that size the Slurm job rather than set one of the recipe's settings.
RESOURCE_KEYS = {"cpu": "cpu", "cpus": "cpu", "memory": "memory", "gpu": "gpu", "gpus": "gpu",
                 "time_limit": "time_limit", "time_limit_minutes": "time_limit"}


def status(obj: dict) -> str:
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return BEING_DELETED
    return STATUS_OF_PHASE.get((obj.get("status") or {}).get("phase") or "pending", "pending")


def container_state(obj: dict) -> str:
    return CONTAINER_STATE_OF_PHASE.get((obj.get("status") or {}).get("phase") or "pending", EXITED)


def stamp(when: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)) if when else None


def updated_at(obj: dict) -> str | None:
    """The last write to the resource (spec or status) Kubernetes recorded, else its creation."""
    meta = obj.get("metadata") or {}
    times = [f.get("time") for f in meta.get("managedFields") or [] if f.get("time")]
    return max([*times, meta.get("creationTimestamp") or ""]) or None


def port(obj: dict) -> int | None:
    endpoint = (obj.get("status") or {}).get("endpoint")
    try:
        return urlparse(endpoint).port if endpoint else None
    except ValueError:
        return None


def backend(recipe_path: str) -> str:
    """`inference/vllm` -> `vllm`: LMStack's backend is the recipe's name."""
    return recipe_path.rsplit("/", 1)[-1]


def image(recipe: Recipe | None) -> str:
    if recipe is None:
        return ""
    return recipe.image or ("apptainer build" if recipe.build else "native")


def gpu_info(view: NodeView) -> dict:
    """LMStack's gpu_info: the node's GPUs, each named and sized by the SlurmCluster's gpuTypes; none when the
    node has no GPU GRES (nothing is made up)."""
    return {"count": len(view.devices),
            "devices": [{"name": d.name, "memory": d.memory_mb, "in_use": d.in_use} for d in view.devices]}
