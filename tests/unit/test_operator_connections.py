"""The operator's connections to the Kubernetes API are bounded: kopf's own session opens one per request in flight,
and a thousand services settling after a restart kept a thousand TLS connections' worth of memory."""

from __future__ import annotations

import asyncio

import kopf
import yaml

from aifactory.operator.main import api_connection_limit, operator_login


def _kubeconfig(path, server: str = "https://127.0.0.1:6443") -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "aifactory-system"}}],
    }))


def test_the_login_gives_kopf_a_session_with_a_bounded_connection_pool(tmp_path, monkeypatch):
    _kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    async def login():
        info = await operator_login(settings=kopf.OperatorSettings(), logger=None)
        try:
            return info, info.aiohttp_session.connector.limit
        finally:
            await info.aiohttp_session.close()

    info, limit = asyncio.run(login())
    assert isinstance(info, kopf.AiohttpSession)
    assert info.server == "https://127.0.0.1:6443"
    assert info.default_namespace == "aifactory-system"  # events about cluster-scoped objects go there
    assert 0 < limit == api_connection_limit([])  # aiohttp's limit=0 means no limit at all


def test_each_watched_namespace_leaves_room_for_its_watch_streams():
    assert api_connection_limit(["a", "b", "c"]) > api_connection_limit(["a"]) == api_connection_limit([])
