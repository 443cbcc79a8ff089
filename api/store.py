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

from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from aifactory.api.aiservices import created_order
from aifactory.api.config import ApiSettings
from aifactory.api.kube import kube_message
from aifactory.models import GROUP, VERSION, Recipe
from aifactory.recipes import Catalog

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
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: watch.Watch | None = None
        self.synced = threading.Event()
        self.changes = 0  # counts every change to the cache, so readers can keep what they made of it
        self.last_error: str | None = None
        self.missing = False  # the kind is not installed (its CRD is missing)

    @staticmethod
    def key(obj: dict) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return meta.get("namespace") or "", meta.get("name") or ""

    def objects(self) -> list[dict]:
        with self._lock:
            return list(self._objects.values())

    def put(self, obj: dict) -> None:
        """Add an object this process just created, unless the watch already brought it."""
        with self._lock:
            if self.key(obj) not in self._objects:
                self._objects[self.key(obj)] = obj
                self.changes += 1

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
            self.changes += 1
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
                else:
                    self._objects[self.key(obj)] = obj
                self.changes += 1
        return version


def recipe_of(obj: dict) -> Recipe | None:
    """The Recipe a ServiceRecipe resource describes (its spec holds the Recipe fields in camelCase)."""
    spec = dict(obj.get("spec") or {})
    spec.setdefault("name", (obj.get("metadata") or {}).get("name"))
    try:
        return Recipe.model_validate(spec)
    except ValidationError as exc:
        log.warning("ServiceRecipe %s is not a valid recipe: %s", spec.get("name"), exc)
        return None


class KubeUnavailable(Exception):
    """The Kubernetes API has not answered the first list yet."""


class Store:
    """AIServices of one namespace and the cluster's ServiceRecipes, cached; create and delete pass through."""

    def __init__(self, api: client.ApiClient, watch_api: client.ApiClient, settings: ApiSettings):
        self.namespace = settings.namespace
        self.settings = settings
        self._listing: tuple[int, bytes] | None = None
        self._custom = client.CustomObjectsApi(api)
        watching = client.CustomObjectsApi(watch_api)

        def list_services(**kw: Any) -> Any:
            return watching.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "aiservices", **kw)

        def list_recipes(**kw: Any) -> Any:
            return watching.list_cluster_custom_object(GROUP, VERSION, "servicerecipes", **kw)

        def list_clusters(**kw: Any) -> Any:
            return watching.list_cluster_custom_object(GROUP, VERSION, "slurmclusters", **kw)

        # kubernetes.watch reads the return type of custom objects from the list function's docstring.
        list_services.__doc__ = list_recipes.__doc__ = list_clusters.__doc__ = ":return: object"
        self.services = Informer("aiservices", list_services)
        self.recipes = Informer("servicerecipes", list_recipes, missing_ok=True,
                                missing_retry=settings.recipe_retry_seconds)
        self.clusters = Informer("slurmclusters", list_clusters)
        self._informers = (self.services, self.recipes, self.clusters)
        self._recipes: dict[tuple[str | None, str | None], Recipe | None] = {}

    def start(self) -> None:
        for informer in self._informers:
            informer.start()

    def stop(self) -> None:
        for informer in self._informers:
            informer.stop()

    async def ready(self) -> None:
        """Wait (a bounded time) until the first list of AIServices arrived."""
        for informer in self._informers:
            if informer.synced.is_set():
                continue
            if not await asyncio.to_thread(informer.synced.wait, self.settings.sync_timeout):
                raise KubeUnavailable(f"Kubernetes API not reachable: {informer.last_error or 'no answer yet'}")

    def list_services(self) -> list[dict]:
        return sorted(self.services.objects(), key=created_order)

    def services_listing(self, render: Callable[[list[dict]], bytes]) -> bytes:
        """render(list_services()), kept until a service changes."""
        version = self.services.changes
        if self._listing is None or self._listing[0] != version:
            self._listing = (version, render(self.list_services()))
        return self._listing[1]

    def slurm_cluster(self, name: str) -> dict | None:
        return next((o for o in self.clusters.objects() if o["metadata"].get("name") == name), None)

    def catalog(self) -> Catalog:
        overrides, parsed = {}, {}
        for obj in self.recipes.objects():
            meta = obj.get("metadata") or {}
            key = (meta.get("name"), meta.get("resourceVersion"))
            # Parsed once per version: an invalid one is logged once, not at every request.
            recipe = self._recipes[key] if key in self._recipes else recipe_of(obj)
            parsed[key] = recipe
            if recipe is not None:
                overrides[recipe.path] = recipe
        self._recipes = parsed
        return Catalog(overrides)

    async def create(self, manifest: dict) -> dict:
        created = await asyncio.to_thread(self._custom.create_namespaced_custom_object, GROUP, VERSION,
                                          manifest["metadata"]["namespace"], "aiservices", manifest)
        self.services.put(created)
        return created

    async def delete(self, name: str, namespace: str) -> None:
        await asyncio.to_thread(self._custom.delete_namespaced_custom_object, GROUP, VERSION, namespace,
                                "aiservices", name, propagation_policy="Background")
