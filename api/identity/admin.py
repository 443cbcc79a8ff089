"""Keys and users as Kubernetes resources: what the identity routes and the start-up write. Only hashes are stored."""

from __future__ import annotations

import logging
import secrets
import time

from kubernetes.client.rest import ApiException

from aifactory.api.identity.keys import NewKey, key_hash, key_id_of, key_prefix, new_key
from aifactory.models import API_VERSION, ApiKeySpec, Role, UserSpec

log = logging.getLogger(__name__)

MANAGED_BY = {"app.kubernetes.io/managed-by": "aifactory-api"}
OWNER_LABEL = "aifactory.io/owner"


def stamp(when: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when if when is not None else time.time()))


def apikey_manifest(made: NewKey, namespace: str, *, name: str, role: Role, owner: str | None = None,
                    allowed_models: list[str] | None = None, expires_at: str | None = None) -> dict:
    spec = ApiKeySpec(display_name=name, role=role, key_hash=made.key_hash, prefix=made.prefix, owner=owner,
                      allowed_models=list(allowed_models or []), expires_at=expires_at)
    labels = {**MANAGED_BY, **({OWNER_LABEL: owner} if owner else {})}
    return {"apiVersion": API_VERSION, "kind": "ApiKey",
            "metadata": {"name": made.id, "namespace": namespace, "labels": labels}, "spec": spec.wire()}


def user_manifest(namespace: str, spec: UserSpec) -> dict:
    return {"apiVersion": API_VERSION, "kind": "User",
            "metadata": {"name": f"u-{secrets.token_hex(5)}", "namespace": namespace, "labels": dict(MANAGED_BY)},
            "spec": spec.wire()}


async def ensure_bootstrap_key(state) -> None:
    """The configured bootstrap admin key, stored (as its hash) in the default tenant unless it is there."""
    key = state.settings.bootstrap_admin_key or ""
    key_id = key_id_of(key)
    if key_id is None:
        log.error("AIFACTORY_API_BOOTSTRAP_ADMIN_KEY is not an aifactory key (aif_<12 hex>_<secret>); ignored")
        return
    known = state.store.keys.named(key_id)
    if known is not None:
        if (known.get("spec") or {}).get("keyHash") != key_hash(key):
            log.error("the bootstrap admin key's id %s is taken by another key; not stored", key_id)
        return
    made = NewKey(key_id, key, key_hash(key))
    try:
        await state.store.create("apikeys", apikey_manifest(made, state.settings.namespace, name="bootstrap admin",
                                                            role=Role.admin))
    except ApiException as exc:
        if exc.status != 409:
            raise
    log.info("stored the bootstrap admin key %s (its hash) in tenant %s", key_prefix(key_id),
             state.settings.namespace)


async def record_last_used(state, key_id: str, when: float) -> None:
    obj = state.store.keys.named(key_id)
    if obj is None:
        return
    minute = stamp(when - when % 60)
    if (obj.get("status") or {}).get("lastUsed") == minute:
        return
    await state.store.patch("apikeys", obj, {"status": {"lastUsed": minute}}, status=True)


__all__ = ["apikey_manifest", "user_manifest", "ensure_bootstrap_key", "record_last_used", "new_key", "stamp"]
