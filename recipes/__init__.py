"""The recipe catalog: YAML files `<category>/<name>.yaml` shipped in this package.

ServiceRecipe resources (cluster-scoped) add or override entries at run time; `Catalog` merges both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from aifactory.models import Recipe

HERE = Path(__file__).parent
_PATH = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$")


class RecipeNotFound(LookupError):
    def __init__(self, path: str):
        super().__init__(f"Recipe '{path}' not found")
        self.path = path


class RecipeInvalid(ValueError):
    pass


def load_recipe_file(path: Path) -> Recipe:
    """One recipe file; the category is its folder and the name its stem unless the file says otherwise."""
    data = yaml.safe_load(path.read_text()) or {}
    data.setdefault("category", path.parent.name)
    data.setdefault("name", path.stem)
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeInvalid(f"{path.parent.name}/{path.name}: {_field_errors(exc)}") from exc


def recipe_from_resource(body: Mapping[str, Any]) -> Recipe:
    """The recipe a ServiceRecipe resource declares (its spec is a Recipe; its name defaults to the resource's);
    the error names the bad field."""
    name = (body.get("metadata") or {}).get("name", "?")
    spec = dict(body.get("spec") or {})
    spec.setdefault("name", name)
    try:
        return Recipe.model_validate(spec)
    except ValidationError as exc:
        raise RecipeInvalid(f"ServiceRecipe {name}: {_field_errors(exc)}") from exc


def _field_errors(exc: ValidationError) -> str:
    """pydantic's errors as `field: message` (model-wide checks already start with the field's name)."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


@lru_cache(maxsize=1)
def builtin_recipes() -> dict[str, Recipe]:
    recipes = {}
    for file in sorted(HERE.glob("*/*.yaml")):
        recipe = load_recipe_file(file)
        recipes[recipe.path] = recipe
    return recipes


class Catalog:
    """The built-in recipes merged with the ones the cluster adds (ServiceRecipe resources win).

    The operator (from its ServiceRecipe handlers) and the REST API (from its watch) feed it the same way:
    `apply` a resource, `forget` a deleted one.
    """

    def __init__(self, overrides: dict[str, Recipe] | None = None):
        self.overrides = overrides if overrides is not None else {}
        # Which resource put each path here, so that deleting or renaming one never removes another's.
        self._owners: dict[str, str] = {}

    def apply(self, resource: Mapping[str, Any]) -> Recipe:
        """Take a ServiceRecipe resource in (replacing what it said before); RecipeInvalid names the bad field,
        and the resource then adds nothing."""
        name = (resource.get("metadata") or {}).get("name", "")
        self.forget(name)
        recipe = recipe_from_resource(resource)
        self.overrides[recipe.path] = recipe
        self._owners[recipe.path] = name
        return recipe

    def forget(self, resource_name: str) -> None:
        for path in [p for p, owner in self._owners.items() if owner == resource_name]:
            del self._owners[path]
            self.overrides.pop(path, None)

    def replace(self, resources: list[Mapping[str, Any]]) -> list[RecipeInvalid]:
        """Exactly these resources' recipes over the built-in ones; the invalid ones are returned, not applied."""
        self.overrides.clear()
        self._owners.clear()
        invalid = []
        for resource in resources:
            try:
                self.apply(resource)
            except RecipeInvalid as exc:
                invalid.append(exc)
        return invalid

    def all(self) -> dict[str, Recipe]:
        return {**builtin_recipes(), **self.overrides}

    def get(self, path: str) -> Recipe:
        """A recipe by path (`inference/vllm`) or by bare name when that name is unique."""
        if not _PATH.match(path or ""):
            # Also what keeps `../x` and absolute paths from ever leaving the catalog.
            raise RecipeNotFound(path)
        recipes = self.all()
        if path in recipes:
            return recipes[path]
        if "/" not in path:
            named = [r for r in recipes.values() if r.name == path]
            if len(named) == 1:
                return named[0]
        raise RecipeNotFound(path)
