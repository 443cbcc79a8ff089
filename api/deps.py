"""What routes depend on, as `Annotated` shortcuts: the app's state, the ready store, the service of the path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import httpx
from fastapi import Depends, HTTPException, Path, Request

from aifactory.api.aiservices import find_service
from aifactory.api.clusters import SlurmClusters
from aifactory.api.config import ApiSettings
from aifactory.api.kube import api_client
from aifactory.api.store import Store


@dataclass
class ApiState:
    """Made on first use, so that building the app (and its OpenAPI document) needs no cluster."""

    settings: ApiSettings
    _store: Store | None = None
    _clusters: SlurmClusters | None = None
    _http: httpx.AsyncClient | None = field(default=None, repr=False)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(api_client(self.settings), api_client(self.settings), self.settings)
            self._store.start()
        return self._store

    @property
    def clusters(self) -> SlurmClusters:
        if self._clusters is None:
            self._clusters = SlurmClusters(api_client(self.settings), self.settings.operator_namespace,
                                           self.store.slurm_cluster, self.timeout)
        return self._clusters

    @property
    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.settings.prompt_timeout, connect=self.settings.connect_timeout)

    @property
    def http(self) -> httpx.AsyncClient:
        """The one client for service endpoints (never a proxy from the environment)."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout, trust_env=False)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._clusters is not None:
            await self._clusters.close()
        if self._store is not None:
            self._store.stop()


def get_state(request: Request) -> ApiState:
    return request.app.state.aifactory


def get_settings(request: Request) -> ApiSettings:
    return get_state(request).settings


StateDep = Annotated[ApiState, Depends(get_state)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]


async def get_store(state: StateDep) -> Store:
    store = state.store
    await store.ready()
    return store


StoreDep = Annotated[Store, Depends(get_store)]


async def get_service(store: StoreDep, service_id: Annotated[str, Path(title="Service Id")]) -> dict:
    obj = find_service(store.list_services(), service_id)
    if obj is None:
        raise HTTPException(status_code=404, detail="Service not found")
    return obj


ServiceDep = Annotated[dict, Depends(get_service)]
