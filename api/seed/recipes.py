"""GET /api/v1/recipes and /api/v1/recipes/{path}: the built-in catalog merged with ServiceRecipe resources."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from aifactory.api.deps import Management, StoreDep
from aifactory.api.seed.errors import AUTH, KUBE_DOWN, NOT_FOUND
from aifactory.api.seed.schemas import RecipeResponse

router = APIRouter(prefix="/api/v1/recipes", tags=["recipes"], dependencies=[Management], responses={**AUTH})


@router.get("", response_model=list[RecipeResponse], summary="List Recipes", responses={**KUBE_DOWN})
async def list_recipes(store: StoreDep) -> list[RecipeResponse]:
    """List all available recipes."""
    recipes = store.catalog().all()
    return [RecipeResponse.of(recipes[path]) for path in sorted(recipes)]


@router.get("/{recipe_name:path}", response_model=RecipeResponse, summary="Get Recipe",
            responses={**NOT_FOUND, **KUBE_DOWN})
async def get_recipe(store: StoreDep, recipe_name: Annotated[str, Path(title="Recipe Name")]) -> RecipeResponse:
    """Get details of a specific recipe, by path (`inference/vllm`) or by bare name."""
    return RecipeResponse.of(store.catalog().get(recipe_name))
