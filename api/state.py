"""What one API process holds: the watch cache, the clusters, the identity check, the service verbs.

Made on first use, so that building the app (and its OpenAPI document) needs no cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import httpx
from aifactory.api.config import ApiSettings
from aifactory.api.identity.principal import Authenticator, FailureThrottle, Principal
from aifactory.api.kube import api_client
from aifactory.api.store import Store
from aifactory.api.traffic import Traffic
from kubernetes import client as k8s

from aifactory.clusters import Cluster, ClusterNotReady, ClusterRegistry, secret_reader
from aifactory.models import Role, SlurmClusterSpec

log = logging.getLogger(__name__)

LAST_USED_FLUSH_SECONDS = 60.0
TRAFFIC_FLUSH_TICK = 2.0  # how often to look for services whose use is due to be written


@dataclass
class ApiState:
    settings: ApiSettings
    _store: Store | None = None
    _clusters: ClusterRegistry | None = None
    _http: httpx.AsyncClient | None = field(default=None, repr=False)
    _upstream: object | None = field(default=None, repr=False)
    _identity: Authenticator | None = None
    _services: object | None = None
    _nodes: object | None = None
    _trainings: object | None = None
    _registries: object | None = None
    _tasks: list[asyncio.Task] = field(default_factory=list)
    traffic: Traffic = field(default_factory=Traffic)
    _keys_flushed: float = field(default_factory=time.monotonic)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(api_client(self.settings), api_client(self.settings), self.settings)
            self._store.start()
        return self._store

    @property
    def clusters(self) -> ClusterRegistry:
        if self._clusters is None:
            core = k8s.CoreV1Api(api_client(self.settings))
            self._clusters = ClusterRegistry(secret_reader(core, self.settings.operator_namespace),
                                             http_timeout=self.timeout, with_pollers=False)
        return self._clusters

    async def cluster(self, name: str) -> Cluster:
        """The cluster as its SlurmCluster says now (rebuilt when its spec changed)."""
        obj = self.store.slurm_cluster(name)
        if obj is None:
            raise ClusterNotReady(f"SlurmCluster '{name}' not found")
        return await self.clusters.put(name, SlurmClusterSpec.model_validate(obj.get("spec") or {}))

    @property
    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.settings.prompt_timeout, connect=self.settings.connect_timeout)

    @property
    def http(self) -> httpx.AsyncClient:
        """The one client for service endpoints reached directly (never a proxy from the environment)."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout, trust_env=False)
        return self._http

    @property
    def upstream(self):
        """The gateway's keep-alive connections to services reached directly (api/upstream.py)."""
        if self._upstream is None:
            from aifactory.api.upstream import UpstreamPool

            self._upstream = UpstreamPool()
        return self._upstream

    @property
    def identity(self) -> Authenticator:
        if self._identity is None:
            throttle = FailureThrottle(limit=self.settings.auth_failures_per_minute)
            self._identity = Authenticator(self.store.keys.named, throttle=throttle)
        return self._identity

    @property
    def services(self):
        if self._services is None:
            from aifactory.api.services import ServiceVerbs

            self._services = ServiceVerbs(self)
        return self._services

    @property
    def nodes(self):
        """The clusters' nodes (api/nodes.py): one cached read per cluster and node interval, shared by all."""
        if self._nodes is None:
            from aifactory.api.nodes import NodeVerbs

            self._nodes = NodeVerbs(self)
        return self._nodes

    @property
    def trainings(self):
        if self._trainings is None:
            from aifactory.api.trainings import TrainingVerbs

            self._trainings = TrainingVerbs(self)
        return self._trainings

    @property
    def registries(self):
        if self._registries is None:
            from aifactory.api.registries import RegistryVerbs

            self._registries = RegistryVerbs(self)
        return self._registries

    @property
    def trusted(self) -> Principal:
        """Who every caller is when auth is off: one trusted admin working in the default tenant."""
        return Principal(tenant=self.settings.namespace, role=Role.admin, user="trusted")

    async def authenticate(self, authorization: str | None, x_api_key: str | None, client: str) -> Principal:
        if not self.settings.auth:
            return self.trusted
        await self.store.ready()  # keys are judged only once the first list of them arrived
        return self.identity.authenticate(authorization, x_api_key, client)

    def start(self) -> None:
        if not self.settings.auth:
            log.warning("authentication is OFF (AIFACTORY_API_AUTH=false): every caller acts as an admin of "
                        "tenant %s; use this only where one trusted user can reach the API", self.settings.namespace)
        self.store  # start watching at once, not at the first request  # noqa: B018
        if self.settings.auth:
            self._tasks.append(asyncio.create_task(self._bootstrap_then_flush(), name="aifactory-key-last-used"))
        self._tasks.append(asyncio.create_task(self._flush_traffic_now_and_then(), name="aifactory-traffic"))

    async def _bootstrap_then_flush(self) -> None:
        from aifactory.api.identity import admin

        try:
            await self.store.ready()
            if self.settings.bootstrap_admin_key:
                await admin.ensure_bootstrap_key(self)
        except Exception as exc:  # noqa: BLE001  (the API still serves; the next start tries again)
            log.error("could not store the bootstrap admin key: %s", type(exc).__name__)
        while True:
            await asyncio.sleep(LAST_USED_FLUSH_SECONDS)
            await self.flush_last_used()

    async def flush_last_used(self) -> None:
        """Write keys' last use back to their ApiKey status: one write per used key per minute at most."""
        from aifactory.api.identity.admin import record_last_used

        used, self.identity.last_used = self.identity.last_used, {}
        for key_id, when in used.items():
            try:
                await record_last_used(self, key_id, when)
            except Exception as exc:  # noqa: BLE001  (a key deleted meanwhile, the apiserver away: next time)
                log.debug("last use of key %s not recorded: %s", key_id, exc)

    async def _flush_traffic_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(TRAFFIC_FLUSH_TICK)
            await self.flush_traffic()

    async def flush_traffic(self, everything: bool = False) -> None:
        """Write services' last request and usage back to their status (each at most once per its resolution),
        and keys' usage once a minute."""
        store = self.store

        def idle_timeout(key):
            return ((store.service(*key) or {}).get("spec") or {}).get("idleTimeoutMinutes")

        due = list(self.traffic.unwritten_services) if everything else self.traffic.services_due(idle_timeout)
        for key in due:
            obj = store.service(*key)
            if obj is None:
                self.traffic.take_service(key)
                continue
            when, tally = self.traffic.take_service(key)
            body = {"usage": tally.over((obj.get("status") or {}).get("usage"))}
            if when is not None:
                body["lastRequest"] = utc_stamp(when)
            try:
                await store.patch("aiservices", obj, {"status": body}, status=True)
            except Exception as exc:  # noqa: BLE001  (the apiserver away, the service deleted: next time)
                self.traffic.untake_service(key, tally)
                log.debug("use of service %s/%s not recorded: %s", *key, exc)
        if everything or time.monotonic() - self._keys_flushed >= LAST_USED_FLUSH_SECONDS:
            self._keys_flushed = time.monotonic()
            for key_id, tally in self.traffic.take_keys().items():
                obj = store.keys.named(key_id)
                if obj is None:
                    continue
                try:
                    await store.patch("apikeys", obj, {"status": {"usage": tally.over(
                        (obj.get("status") or {}).get("usage"))}}, status=True)
                except Exception as exc:  # noqa: BLE001
                    log.debug("usage of key %s not recorded: %s", key_id, exc)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._store is not None and (self.traffic.unwritten_services or self.traffic.unwritten_keys):
            try:
                await asyncio.wait_for(self.flush_traffic(everything=True), 5)
            except Exception as exc:  # noqa: BLE001
                log.warning("gateway usage not written at shutdown: %s", exc)
        if self._identity is not None and self._identity.last_used:
            await asyncio.wait_for(self.flush_last_used(), 5)
        if self._http is not None:
            await self._http.aclose()
        if self._upstream is not None:
            self._upstream.close()
        if self._clusters is not None:
            await self._clusters.close()
        if self._store is not None:
            self._store.stop()


def utc_stamp(when: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when if when is not None else time.time()))
