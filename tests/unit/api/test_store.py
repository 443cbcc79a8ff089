"""The list+watch loop of the API's cache: events applied, resourceVersion followed, re-list after 410 Gone,
a missing CRD treated as no objects. The watch is a scripted stand-in; the real one runs in the e2e tests."""

from __future__ import annotations

import threading
import time

from kubernetes.client.rest import ApiException

from aifactory.api import store as store_module
from aifactory.api.store import Informer


def obj(name: str, rv: str, **spec) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "resourceVersion": rv}, "spec": spec}


def wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class ScriptedWatch:
    """Each stream() call plays the next script: a list of events, or an exception to raise."""

    scripts: list = []
    calls: list[str] = []

    def __init__(self) -> None:
        self._stop = False

    def stream(self, fn, resource_version: str, **kw):
        ScriptedWatch.calls.append(resource_version)
        script = ScriptedWatch.scripts.pop(0) if ScriptedWatch.scripts else []
        if isinstance(script, Exception):
            raise script
        yield from script
        if not ScriptedWatch.scripts:
            time.sleep(0.05)  # the end of the script: idle like a quiet watch

    def stop(self) -> None:
        self._stop = True


def test_list_then_watch_events_then_relist_after_410(monkeypatch) -> None:
    monkeypatch.setattr(store_module.watch, "Watch", ScriptedWatch)
    lists = [{"metadata": {"resourceVersion": "10"}, "items": [obj("a", "9")]},
             {"metadata": {"resourceVersion": "50"}, "items": [obj("c", "45")]}]
    listed = []

    def list_fn(**kw):
        listed.append(kw)
        return lists.pop(0) if lists else {"metadata": {"resourceVersion": "50"}, "items": [obj("c", "45")]}

    ScriptedWatch.calls = []
    ScriptedWatch.scripts = [
        [{"type": "ADDED", "object": obj("b", "11")}, {"type": "MODIFIED", "object": obj("a", "12", x=1)},
         {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}}],
        [{"type": "DELETED", "object": obj("b", "21")}],
        ApiException(status=410, reason="Gone: too old resource version"),
    ]
    informer = Informer("things", list_fn)
    informer.start()
    try:
        wait(lambda: len(listed) >= 2)
        wait(lambda: {o["metadata"]["name"] for o in informer.objects()} == {"c"})
    finally:
        informer.stop()
    # Each watch resumes where the last one ended (bookmarks included); after the 410 a fresh list's version.
    assert ScriptedWatch.calls[:3] == ["10", "20", "21"]
    assert ScriptedWatch.calls[3] == "50"


def test_a_missing_crd_is_no_objects_and_synced(monkeypatch) -> None:
    monkeypatch.setattr(store_module.watch, "Watch", ScriptedWatch)
    ScriptedWatch.scripts = []
    looked = threading.Event()

    def list_fn(**kw):
        looked.set()
        raise ApiException(status=404, reason="Not Found")

    informer = Informer("servicerecipes", list_fn, missing_ok=True, missing_retry=60)
    informer.start()
    try:
        assert informer.synced.wait(5)
        assert informer.missing and informer.objects() == []
    finally:
        informer.stop()


def test_other_failures_are_retried_and_remembered(monkeypatch) -> None:
    monkeypatch.setattr(store_module.watch, "Watch", ScriptedWatch)
    ScriptedWatch.scripts = []
    attempts = []

    def list_fn(**kw):
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionRefusedError("connection refused")
        return {"metadata": {"resourceVersion": "1"}, "items": []}

    informer = Informer("aiservices", list_fn)
    assert not informer.synced.is_set()
    informer.start()
    try:
        assert informer.synced.wait(5)  # after one backoff of a second
    finally:
        informer.stop()
    assert len(attempts) >= 2


def test_put_keeps_what_the_watch_already_brought() -> None:
    informer = Informer("aiservices", lambda **kw: None)
    informer.put(obj("a", "5"))
    informer.put(obj("a", "3"))
    assert informer.objects()[0]["metadata"]["resourceVersion"] == "5"


def test_servicerecipes_feed_the_catalog_the_way_the_operator_feeds_its_own() -> None:
    from aifactory.api.config import ApiSettings
    from aifactory.api.store import Store
    from aifactory.recipes import Catalog
    from kubernetes import client

    echo2 = {"metadata": {"name": "echo2", "resourceVersion": "1"}, "spec": {
        "category": "testing", "runtime": "native", "command": ["x"], "openaiApi": True,
        "resources": {"timeLimit": 5}}}
    bad = {"metadata": {"name": "bad", "resourceVersion": "2"}, "spec": {"category": "Not A Label"}}
    store = Store(client.ApiClient(), client.ApiClient(), ApiSettings())
    store.recipes.put(echo2)
    store.recipes.put(bad)
    recipe = store.catalog().get("testing/echo2")
    assert recipe.openai_api and recipe.resources.time_limit == 5
    operators = Catalog()
    operators.apply(echo2)
    assert operators.all() == store.catalog().all()  # one function, one result in both processes
    store.recipes.drop(echo2)
    assert "testing/echo2" not in store.catalog().all()


def test_the_service_listing_is_rendered_again_only_after_a_change() -> None:
    from aifactory.api.config import ApiSettings
    from aifactory.api.store import Store
    from kubernetes import client

    store = Store(client.ApiClient(), client.ApiClient(), ApiSettings())
    renders: list[int] = []

    def render(objects: list[dict]) -> bytes:
        renders.append(len(objects))
        return str(len(objects)).encode()

    assert store.services_listing("default", render) == b"0"
    assert store.services_listing("default", render) == b"0" and renders == [0]  # kept
    store.services.put(obj("a", "1"))
    assert store.services_listing("default", render) == b"1" and renders == [0, 1]
    assert store.services_listing("team-b", render) == b"0"  # each tenant sees its own
