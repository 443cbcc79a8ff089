"""The operator's Slurm clusters: the shared registry (aifactory.clusters), with one job poller per cluster."""

from __future__ import annotations

from kubernetes import client as k8s

from aifactory.clusters import Cluster, ClusterNotReady, ClusterRegistry, secret_reader
from aifactory.operator.config import config

__all__ = ["Cluster", "ClusterNotReady", "registry", "connect_secrets"]

registry = ClusterRegistry(http_timeout=config.probe_timeout, with_pollers=True)


def connect_secrets() -> None:
    """Once the Kubernetes client is configured: read SlurmClusters' Secrets from the operator's namespace."""
    registry.read_secret = secret_reader(k8s.CoreV1Api(), config.namespace)
