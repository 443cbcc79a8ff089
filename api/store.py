"""A watch-fed cache of the cluster's AIServices and ServiceRecipes; writes go straight to the API server.

Each kind has one list+watch loop in a daemon thread (the kubernetes client is synchronous): list, then watch from
the list's resourceVersion; a 410 Gone starts over with a fresh list; any other failure reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from aifactory.api.aiservices import created_order
from aifactory.api.config import ApiSettings
from aifactory.api.kube import kube_message
from aifactory.recipes import Catalog
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from aifactory.models import GROUP, VERSION

log = logging.getLogger(__name__)

WATCH_SECONDS = 240  # the apiserver ends each watch after this; the loop resumes from the last resourceVersion


class Informer:
    """One resource kind kept current by list+watch, by (namespace, name)."""

    def __init__(self, kind: str, list_fn: Callable[..., Any], *, missing_ok: bool = False,
                 missing_retry: float = 30.0):
        self.kind = kind
        self._list = list_fn
        self._missing_ok = missing_ok
        self._missing_retry = missing_retry
        self._objects: dict[tuple[str, str], dict] = {}
        self._by_name: dict[str, dict] = {}  # for kinds whose names are unique across namespaces (keys, users)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: watch.Watch | None = None
        self.synced = threading.Event()
        self.changes = 0  # counts every change to the cache, so readers can keep what they made of it
        self.on_change: Callable[[], None] | None = None  # called (in the watch's thread) after each change
        self.last_error: str | None = None
        self.missing = False  # the kind is not installed (its CRD is missing)

    @staticmethod
    def key(obj: dict) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return meta.get("namespace") or "", meta.get("name") or ""

    def objects(self) -> list[dict]:
        with self._lock:
            return list(self._objects.values())

    def named(self, name: str) -> dict | None:
        """The object of this name (in whichever namespace; for kinds with unique names)."""
        return self._by_name.get(name)

    def put(self, obj: dict) -> None:
        """Add an object this process just created or changed, unless the watch already brought a newer one."""
        with self._lock:
            old = self._objects.get(self.key(obj))
            if old is None or _version(old) < _version(obj):
                self._set(obj)
                self.changes += 1
        self._changed()

    def drop(self, obj: dict) -> None:
        """Forget an object this process just deleted (the watch will say so too)."""
        with self._lock:
            if self._objects.pop(self.key(obj), None) is not None:
                self._by_name.pop(self.key(obj)[1], None)
                self.changes += 1
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _set(self, obj: dict) -> None:
        self._objects[self.key(obj)] = obj
        self._by_name[self.key(obj)[1]] = obj

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"watch-{self.kind}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def _run(self) -> None:
        version: str | None = None
        backoff = 1.0
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._relist()
                version = self._follow(version)
                backoff = 1.0
            except ApiException as exc:
                if exc.status == 410:
                    version = None  # our resourceVersion is too old: list again
                    continue
                if exc.status == 404 and self._missing_ok:
                    if not self.missing:
                        log.info("%s: not installed (404); no objects, looking again every %.0fs",
                                 self.kind, self._missing_retry)
                    self.missing, version = True, None
                    with self._lock:
                        self._objects.clear()
                        self._by_name.clear()
                        self.changes += 1
                    self.synced.set()
                    self._stop.wait(self._missing_retry)
                    continue
                self.last_error = f"{exc.status}: {kube_message(exc)}"
                log.warning("%s: watch failed (%s); retrying in %.0fs", self.kind, self.last_error, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as exc:  # connection refused, TLS, timeouts: all mean "try again later"
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: watch failed (%s); retrying in %.0fs", self.kind, self.last_error, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _relist(self) -> str:
        answer = self._list(_request_timeout=30)
        with self._lock:
            self._objects = {self.key(o): o for o in answer.get("items") or []}
            self._by_name = {self.key(o)[1]: o for o in self._objects.values()}
            self.changes += 1
        self._changed()
        self.missing, self.last_error = False, None
        self.synced.set()
        return answer["metadata"]["resourceVersion"]

    def _follow(self, version: str) -> str | None:
        self._watch = watch.Watch()
        for event in self._watch.stream(self._list, resource_version=version, timeout_seconds=WATCH_SECONDS,
                                        allow_watch_bookmarks=True, _request_timeout=WATCH_SECONDS + 30):
            if self._stop.is_set():
                break
            kind, obj = event["type"], event["object"]
            if not isinstance(obj, dict):
                continue
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if kind == "BOOKMARK":
                continue
            with self._lock:
                if kind == "DELETED":
                    self._objects.pop(self.key(obj), None)
                    self._by_name.pop(self.key(obj)[1], None)
                else:
                    self._set(obj)
                self.changes += 1
            self._changed()
        return version


def _version(obj: dict) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class KubeUnavailable(Exception):
    """The Kubernetes API has not answered the first list yet."""


class ChangeSignal:
    """Wakes the coroutines waiting for a change (of any service): fired from the watch's thread, awaited in
    the event loop. A held request waits on it instead of polling."""

    def __init__(self) -> None:
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._lock = threading.Lock()

    def fire(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)

    async def wait(self, timeout: float) -> None:
        """Until the next change, or timeout seconds."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._waiters.append((loop, future))
        try:
            await asyncio.wait_for(future, max(0.0, timeout))
        except TimeoutError:
            pass


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


# The kinds the API watches: plural -> (cluster-scoped, may be missing). Every AIService of every namespace is
# watched: tenants are namespaces, and each request then sees only its own.
WATCHED = {
    "aiservices": (False, False),
    "servicerecipes": (True, True),
    "slurmclusters": (True, False),
    "tenants": (True, True),
    "apikeys": (False, True),
    "users": (False, True),
    "trainingruns": (False, True),
}


class Store:
    """The aifactory resources of the cluster, cached by one watch per kind; writes pass through."""

    def __init__(self, api: client.ApiClient, watch_api: client.ApiClient, settings: ApiSettings):
        self.settings = settings
        self._listings: dict[object, tuple[int, bytes]] = {}
        self._custom = client.CustomObjectsApi(api)
        watching = client.CustomObjectsApi(watch_api)
        self.informers: dict[str, Informer] = {}
        for plural, (cluster_scoped, missing_ok) in WATCHED.items():
            lister = (lambda plural: lambda **kw: watching.list_cluster_custom_object(GROUP, VERSION, plural, **kw))(
                plural)
            # kubernetes.watch reads the return type of custom objects from the list function's docstring.
            lister.__doc__ = ":return: object"
            self.informers[plural] = Informer(plural, lister, missing_ok=missing_ok,
                                              missing_retry=settings.recipe_retry_seconds)
        self.services = self.informers["aiservices"]
        self.recipes = self.informers["servicerecipes"]
        self.clusters = self.informers["slurmclusters"]
        self.tenants = self.informers["tenants"]
        self.keys = self.informers["apikeys"]
        self.users = self.informers["users"]
        self.trainings = self.informers["trainingruns"]
        self._catalog = Catalog()
        self._catalog_version = -1
        self.service_changed = ChangeSignal()
        self.services.on_change = self.service_changed.fire
        self._routes: tuple[int, dict[tuple[str, str], dict]] = (-1, {})

    def start(self) -> None:
        for informer in self.informers.values():
            informer.start()

    def stop(self) -> None:
        for informer in self.informers.values():
            informer.stop()

    async def ready(self) -> None:
        """Wait (a bounded time) until the first list of every kind arrived."""
        for informer in self.informers.values():
            if informer.synced.is_set():
                continue
            if not await asyncio.to_thread(informer.synced.wait, self.settings.sync_timeout):
                raise KubeUnavailable(f"Kubernetes API not reachable: {informer.last_error or 'no answer yet'}")

    def list_services(self, namespace: str | None = None) -> list[dict]:
        """AIServices of one namespace, or of all (None), oldest first."""
        objects = self.services.objects()
        if namespace is not None:
            objects = [o for o in objects if (o.get("metadata") or {}).get("namespace") == namespace]
        return sorted(objects, key=created_order)

    def list_trainings(self, namespace: str | None = None) -> list[dict]:
        """TrainingRuns of one namespace, or of all (None), oldest first."""
        objects = self.trainings.objects()
        if namespace is not None:
            objects = [o for o in objects if (o.get("metadata") or {}).get("namespace") == namespace]
        return sorted(objects, key=created_order)

    def services_listing(self, namespace: str | None, render: Callable[[list[dict]], bytes]) -> bytes:
        """render(list_services(namespace)), kept until a service changes."""
        version = self.services.changes
        known = self._listings.get(namespace)
        if known is None or known[0] != version:
            if len(self._listings) > 1000:
                self._listings.clear()
            known = self._listings[namespace] = (version, render(self.list_services(namespace)))
        return known[1]

    def service(self, namespace: str, name: str) -> dict | None:
        with self.services._lock:
            return self.services._objects.get((namespace, name))

    def routes(self) -> dict[tuple[str, str], dict]:
        """(namespace, model) -> AIService, for routing by model: each service's name, then the model ids it
        serves (status.models); rebuilt once per change of the watch cache."""
        version = self.services.changes
        if self._routes[0] != version:
            table: dict[tuple[str, str], dict] = {}
            services = sorted(self.services.objects(), key=created_order)
            for obj in services:
                for model in (obj.get("status") or {}).get("models") or ():
                    table.setdefault((obj["metadata"].get("namespace", ""), str(model)), obj)
            for obj in services:  # a service's own name comes before any served model id
                table[(obj["metadata"].get("namespace", ""), obj["metadata"].get("name", ""))] = obj
            self._routes = (version, table)
        return self._routes[1]

    def slurm_cluster(self, name: str) -> dict | None:
        return self.clusters.named(name)

    def tenant_for(self, namespace: str) -> dict | None:
        """The Tenant whose namespace this is (a namespace without one is a tenant with no settings)."""
        for obj in self.tenants.objects():
            if ((obj.get("spec") or {}).get("namespace") or obj["metadata"].get("name")) == namespace:
                return obj
        return None

    def catalog(self) -> Catalog:
        """The recipe catalog, rebuilt from the ServiceRecipes when one changes (the operator's is fed alike)."""
        if self._catalog_version != self.recipes.changes:
            version = self.recipes.changes
            for invalid in self._catalog.replace(self.recipes.objects()):
                log.warning("%s", invalid)
            self._catalog_version = version
        return self._catalog

    # ---- writes (each also enters the cache at once, so the next read sees it) --------------------------

    async def create(self, plural: str, manifest: dict, *, dry_run: bool = False) -> dict:
        """dry_run: Kubernetes checks the object (schema, name, admission) and stores nothing."""
        namespace = (manifest.get("metadata") or {}).get("namespace")
        extra = {"dry_run": "All"} if dry_run else {}
        if namespace:
            created = await asyncio.to_thread(self._custom.create_namespaced_custom_object, GROUP, VERSION,
                                              namespace, plural, manifest, **extra)
        else:
            created = await asyncio.to_thread(self._custom.create_cluster_custom_object, GROUP, VERSION,
                                              plural, manifest, **extra)
        if not dry_run:
            self.informers[plural].put(created)
        return created

    async def patch(self, plural: str, obj: dict, body: dict, *, status: bool = False) -> dict:
        meta = obj["metadata"]
        call = (self._custom.patch_namespaced_custom_object_status if status
                else self._custom.patch_namespaced_custom_object)
        patched = await asyncio.to_thread(call, GROUP, VERSION, meta["namespace"], plural, meta["name"], body)
        self.informers[plural].put(patched)
        return patched

    async def delete(self, plural: str, obj: dict) -> None:
        meta = obj["metadata"]
        await asyncio.to_thread(self._custom.delete_namespaced_custom_object, GROUP, VERSION, meta["namespace"],
                                plural, meta["name"], propagation_policy="Background")
        if plural != "aiservices":  # an AIService stays (with its deletionTimestamp) until its job ended
            self.informers[plural].drop(obj)
