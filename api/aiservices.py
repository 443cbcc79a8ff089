"""AIService resources as the REST API makes and finds them: pure functions, no I/O."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from aifactory.models import API_VERSION, AIServiceSpec, Recipe, Resources

MANAGED_BY = "aifactory-api"
# DNS-1123 labels are at most 63 characters; the suffix takes 7.
_MAX_PREFIX = 63 - 7
HIDDEN = "***"  # what another tenant's admin sees of a plain environment value


def service_name(recipe: Recipe, suffix: str | None = None) -> str:
    """`<recipe name>-<6 hex>`, e.g. vllm-3f9c2a: readable, and unique enough to retry on the rare clash."""
    prefix = recipe.name[:_MAX_PREFIX].rstrip("-")
    return f"{prefix}-{suffix or secrets.token_hex(3)}"


def aiservice_manifest(name: str, namespace: str, recipe: Recipe, env: dict[str, str] | None = None,
                       resources: Resources | None = None, *, labels: dict[str, str] | None = None,
                       annotations: dict[str, str] | None = None, **spec_fields) -> dict:
    """The AIService the API creates (validated by the same model the CRD is made from)."""
    spec = AIServiceSpec(recipe=recipe.path, env=env or {}, resources=resources or Resources(), **spec_fields)
    metadata = {"name": name, "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, **(labels or {})}}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": API_VERSION, "kind": "AIService", "metadata": metadata, "spec": spec.wire()}


def find_service(objects: Iterable[dict], service_id: str) -> dict | None:
    """The AIService named `service_id`, else the one with that UID (LMStack's deployment ids), else the one whose
    Slurm job id it is (the seed's ids)."""
    by_uid = by_job = None
    for obj in objects:
        meta = obj.get("metadata", {})
        if meta.get("name") == service_id:
            return obj
        if by_uid is None and service_id and meta.get("uid") == service_id:
            by_uid = obj
        if by_job is None and service_id and (obj.get("status") or {}).get("jobId") == service_id:
            by_job = obj
    return by_uid or by_job


def created_order(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return meta.get("creationTimestamp") or "", meta.get("name") or ""


def visible_env(env: dict[str, str], owner: bool) -> dict[str, str]:
    """Plain environment values are shown only to the tenant that owns the service."""
    return dict(env) if owner else {name: HIDDEN for name in env}


def availability(obj: dict) -> tuple[str | None, str, bool]:
    """(endpoint when the service takes requests, why not otherwise, whether it may still come up)."""
    status = obj.get("status") or {}
    name = (obj.get("metadata") or {}).get("name", "")
    phase = status.get("phase") or "pending"
    if obj.get("metadata", {}).get("deletionTimestamp"):
        return None, f"Service {name} is being stopped", False
    if phase == "running" and status.get("endpoint"):
        return status["endpoint"], "", True
    why = f"Service {name} is {phase}"
    if status.get("message"):
        why += f": {status['message']}"
    return None, why, phase not in ("completed", "failed", "cancelled")
