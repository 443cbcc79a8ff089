"""The one identity check: headers in, a Principal (or 401 / 429) out."""

from __future__ import annotations

import pytest

from aifactory.api.identity.admin import apikey_manifest
from aifactory.api.identity.keys import new_key
from aifactory.api.identity.principal import (
    Authenticator, FailureThrottle, Forbidden, Principal, Throttled, Unauthorized, presented_key,
)
from aifactory.models import Role


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def keyring(**keys: dict) -> tuple[Authenticator, Clock, dict[str, str]]:
    """An Authenticator over ApiKey objects: name -> (tenant, role, extra spec)."""
    objects, plain = {}, {}
    for label, (tenant, role, extra) in keys.items():
        made = new_key()
        objects[made.id] = apikey_manifest(made, tenant, name=label, role=role, **extra)
        plain[label] = made.key
    clock = Clock()
    throttle = FailureThrottle(limit=3, window=60, clock=clock)
    return Authenticator(objects.get, throttle=throttle, clock=clock), clock, plain


def test_both_header_forms_give_the_keys_tenant_and_role() -> None:
    auth, _, keys = keyring(a=("team-a", Role.management, {}))
    for headers in ((f"Bearer {keys['a']}", None), (None, keys["a"]), ("Bearer wrong", keys["a"])):
        principal = auth.authenticate(*headers, client="10.0.0.1")
        assert (principal.tenant, principal.role) == ("team-a", Role.management)
    assert presented_key("bearer  x ", None) == "x" and presented_key("Basic x", None) is None


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer aif_nope",
                                           "Bearer aif_0123456789ab_" + "x" * 43])
def test_missing_or_unknown_keys_are_401_saying_how_to_get_one(authorization) -> None:
    auth, _, _ = keyring(a=("team-a", Role.admin, {}))
    with pytest.raises(Unauthorized) as caught:
        auth.authenticate(authorization, None, client=f"c-{authorization}")
    assert "POST /api/api-keys" in str(caught.value) and "X-API-Key" in str(caught.value)


def test_a_revoked_key_fails_at_once() -> None:
    objects: dict[str, dict] = {}
    made = new_key()
    objects[made.id] = apikey_manifest(made, "t", name="k", role=Role.inference)
    auth = Authenticator(objects.get)
    assert auth.authenticate(None, made.key, "c").role is Role.inference
    del objects[made.id]  # what the watch does when the ApiKey is deleted
    with pytest.raises(Unauthorized):
        auth.authenticate(None, made.key, "c")


def test_an_expired_key_is_401_and_last_use_is_recorded_in_memory() -> None:
    auth, clock, keys = keyring(e=("t", Role.inference, {"expires_at": "1970-01-12T13:46:50Z"}))  # 1,000,010
    principal = auth.authenticate(f"Bearer {keys['e']}", None, "c")
    assert auth.last_used == {principal.key_id: clock.now}
    clock.now += 10
    with pytest.raises(Unauthorized, match="expired"):
        auth.authenticate(f"Bearer {keys['e']}", None, "c")


def test_repeated_failures_from_one_client_are_throttled_but_a_valid_key_still_passes() -> None:
    auth, clock, keys = keyring(a=("t", Role.admin, {}))
    for _ in range(3):
        with pytest.raises(Unauthorized):
            auth.authenticate("Bearer nope", None, "10.0.0.9")
    with pytest.raises(Throttled) as caught:
        auth.authenticate("Bearer nope", None, "10.0.0.9")
    assert 1 <= caught.value.retry_after <= 61
    with pytest.raises(Unauthorized):  # another client is not punished for this one
        auth.authenticate("Bearer nope", None, "10.0.0.10")
    assert auth.authenticate(f"Bearer {keys['a']}", None, "10.0.0.9").role is Role.admin
    clock.now += 61
    with pytest.raises(Unauthorized):
        auth.authenticate("Bearer nope", None, "10.0.0.9")


def test_roles_include_the_lesser_ones_and_tenants_see_only_themselves() -> None:
    manager = Principal(tenant="a", role=Role.management)
    manager.require(Role.inference)
    manager.require(Role.management)
    with pytest.raises(Forbidden, match="needs admin"):
        manager.require(Role.admin)
    with pytest.raises(Forbidden):
        Principal(tenant="a", role=Role.inference).require(Role.management)
    assert manager.sees("a") and not manager.sees("b")
    assert Principal(tenant="a", role=Role.admin).sees("b")


def test_allowed_models_limit_a_key_to_those_names() -> None:
    free = Principal(tenant="a", role=Role.inference)
    narrow = Principal(tenant="a", role=Role.inference, allowed_models=("echo-1", "Qwen/Qwen2.5"))
    assert free.may_use_model("anything")
    assert narrow.may_use_model("echo-1") and narrow.may_use_model("other", "Qwen/Qwen2.5")
    assert not narrow.may_use_model("other") and not narrow.may_use_model("", "")
