"""Tenant handlers: an index of the tenants by namespace, which the AIService handlers read to charge each job to
its tenant's Slurm account. kopf handles no AIService before the index has listed every Tenant, so a job never
goes out before its tenant is known."""

from __future__ import annotations

from typing import Any

import kopf

from aifactory.models import GROUP, VERSION

RESOURCE = (GROUP, VERSION, "tenants")


def tenant_namespace(name: str, spec: Any) -> str:
    return (spec or {}).get("namespace") or name


@kopf.index(*RESOURCE)
def tenant_by_namespace(name: str, spec: Any, **_) -> dict[str, dict]:
    return {tenant_namespace(name, spec): dict(spec or {})}


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def tenant_resolve(name: str, spec: Any, status: Any, patch: kopf.Patch, **_) -> None:
    namespace = tenant_namespace(name, spec)
    if status.get("namespace") != namespace:
        patch.status["namespace"] = namespace
