"""The operator: registers the handlers and tunes kopf. Run with `aifactory operator`."""

from __future__ import annotations

import logging

import kopf
import kubernetes

from aifactory.operator import aiservice, slurmcluster  # noqa: F401  (registers the handlers)
from aifactory.operator import servicerecipe, tenant, training  # noqa: F401  (registers the handlers)
from aifactory.operator.clusters import connect_secrets, registry


def load_kube_config() -> None:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


@kopf.on.login()
def operator_login(**kwargs):
    # kopf's default login (through the kubernetes client) knows no namespace, so events about cluster-scoped
    # objects would go to `default`; these two read the Pod's or the kubeconfig context's namespace.
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def operator_configure(settings: kopf.OperatorSettings, **_) -> None:
    load_kube_config()
    connect_secrets()
    # One replica (Recreate): no peering resources needed.
    settings.peering.standalone = True
    # Keep kopf's bookkeeping out of .status, which is ours and schema-checked.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="aifactory.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="aifactory.io", key="last-handled-configuration")
    settings.posting.level = logging.INFO
    # kopf waits this long for more events of an object before handling them; 0.1 s by default.
    settings.batching.batch_window = 0.02
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60


@kopf.on.cleanup()
async def operator_cleanup(**_) -> None:
    await registry.close()
