"""ServiceRecipe handlers: keep the operator's catalog in step with the ServiceRecipe resources.

A ServiceRecipe's spec is a Recipe; it adds the recipe at spec.category/spec.name or overrides the built-in one
there. The catalog lives in memory: on start-up the resume handlers fill it again from the resources.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from aifactory.models import GROUP, VERSION
from aifactory.operator.aiservice import catalog
from aifactory.recipes import RecipeInvalid

log = logging.getLogger(__name__)

RESOURCE = (GROUP, VERSION, "servicerecipes")


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def servicerecipe_apply(body: Any, name: str, patch: kopf.Patch, **_) -> None:
    try:
        recipe = catalog.apply(body)
    except RecipeInvalid as exc:
        patch.status.update({"accepted": False, "path": None, "message": str(exc)})
        kopf.warn(body, reason="InvalidRecipe", message=str(exc))
        return
    message = f"Recipe {recipe.path} is in the catalog"
    patch.status.update({"accepted": True, "path": recipe.path, "message": message})
    kopf.info(body, reason="Accepted", message=message)
    log.info("ServiceRecipe %s: %s", name, message)


@kopf.on.delete(*RESOURCE)
async def servicerecipe_delete(name: str, **_) -> None:
    catalog.forget(name)
    log.info("ServiceRecipe %s removed from the catalog", name)
