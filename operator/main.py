"""The operator: registers the handlers and tunes kopf. Run with `aifactory operator`."""

from __future__ import annotations

import aiohttp
import kopf
import kubernetes

from aifactory.operator import aiservice, slurmcluster  # noqa: F401  (registers the handlers)
from aifactory.operator import servicerecipe, tenant, training  # noqa: F401  (registers the handlers)
from aifactory.operator import statuswrites
from aifactory.operator.clusters import connect_secrets, registry
from aifactory.operator.config import config
from aifactory.operator.tuning import tune


def load_kube_config() -> None:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


# kopf's own HTTP session has no limit on connections to the Kubernetes API: a thousand services settling at once
# after a restart opened about as many TLS connections, whose memory the process kept (bench B4: 808 MB after a
# restart with 1,000 services, 272 MB with the limit). Requests beyond it wait for a free connection; each watch
# stream (one per resource kind and watched namespace) holds one.
API_REQUESTS_AT_ONCE = 24
WATCHES_PER_NAMESPACE = 8  # the five kinds handled here, with room for kopf's own


def api_connection_limit(watched_namespaces: list[str]) -> int:
    return API_REQUESTS_AT_ONCE + WATCHES_PER_NAMESPACE * max(1, len(watched_namespaces))


@kopf.on.login()
async def operator_login(**kwargs) -> kopf.AiohttpSession | None:
    # kopf's default login (through the kubernetes client) knows no namespace, so events about cluster-scoped
    # objects would go to `default`; these two read the Pod's or the kubeconfig context's namespace.
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        return None
    # The session kopf would make itself, but with a bounded connection pool.
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=api_connection_limit(config.watch_namespaces),
                                       ssl=info.as_ssl_context()),
        headers=info.as_http_headers(), proxy=info.proxy_url, trust_env=info.trust_env)
    statuswrites.use(session, info.server)
    return kopf.AiohttpSession(server=info.server, default_namespace=info.default_namespace, priority=info.priority,
                               expiration=info.expiration, aiohttp_session=session)


@kopf.on.startup()
async def operator_configure(settings: kopf.OperatorSettings, **_) -> None:
    load_kube_config()
    connect_secrets()
    tune(settings)


@kopf.on.cleanup()
async def operator_cleanup(**_) -> None:
    await registry.close()
