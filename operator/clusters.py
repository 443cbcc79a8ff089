"""The operator's Slurm clusters: the shared registry (aifactory.clusters), with one job poller per cluster."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace

from kubernetes import client as k8s

from aifactory.clusters import Cluster, ClusterNotReady, ClusterRegistry, secret_reader
from aifactory.operator.config import config
from aifactory.slurm.errors import SlurmError

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
    """Cancel a job and show it cancelled in the poller's cache, so that nothing adopts it before the next poll
    says it ended; whether Slurm took the cancel now. If not, the cluster's poller asks again after each poll:
    nothing else would (the resource it was for is gone or moved on)."""
    log.warning("cancelling Slurm job %s: %s", job_id, why)
    try:
        await cluster.bridge.cancel(job_id)
    except SlurmError as exc:
        log.warning("could not cancel job %s, will try again after the next poll: %s", job_id, exc)
        cluster.poller.cancel_later(job_id, why)
        return False
    job = cluster.poller.job(job_id)
    if job is not None:
        cluster.poller.remember(replace(job, state="CANCELLED"))
    return True


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
