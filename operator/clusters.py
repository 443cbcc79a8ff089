"""The operator's Slurm clusters: the shared registry (aifactory.clusters), with one job poller per cluster."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kubernetes import client as k8s

from aifactory.clusters import Cluster, ClusterNotReady, ClusterRegistry, secret_reader
from aifactory.operator.config import config

__all__ = ["Cluster", "ClusterNotReady", "registry", "connect_secrets", "cancel_job", "cancel_left_behind"]

log = logging.getLogger(__name__)

registry = ClusterRegistry(http_timeout=config.probe_timeout, with_pollers=True)


def connect_secrets() -> None:
    """Once the Kubernetes client is configured: read SlurmClusters' Secrets from the operator's namespace."""
    registry.read_secret = secret_reader(k8s.CoreV1Api(), config.namespace)


def went_without_finalizer(type: str, meta: dict, **_: object) -> bool:
    """A DELETED event for an object never marked for deletion: kube-apiserver removed it while kopf was adding
    its finalizer (a delete that read the object before the finalizer patch deletes it after that patch anyway:
    kubernetes/kubernetes#77988, open for every release so far), so no deletion handler ran for it."""
    return type == "DELETED" and not meta.get("deletionTimestamp")


async def cancel_job(cluster: Cluster, job_id: str, why: str) -> bool:
    """Cancel a job through its cluster's poller (which asks again after each poll should Slurm not take it now);
    whether Slurm took the cancel now."""
    log.warning("cancelling Slurm job %s: %s", job_id, why)
    return await cluster.poller.cancel(job_id, why)


async def cancel_left_behind(cluster_names: Iterable[str | None], uid: str, what: str) -> list[str]:
    """Cancel the live jobs tagged with this UID (in the pollers' caches, which every submit of this process
    enters at once) of a resource that is gone without its finalizer having run; the job ids cancelled."""
    cancelled = []
    for name in dict.fromkeys(n for n in cluster_names if n):
        try:
            cluster = registry.get(name)
        except ClusterNotReady:
            continue
        for job in cluster.poller.jobs_for_service(uid):
            if not job.finished and not job.vanished and await cancel_job(
                    cluster, job.job_id, f"{what} was deleted without its finalizer running"):
                cancelled.append(job.job_id)
    return cancelled
