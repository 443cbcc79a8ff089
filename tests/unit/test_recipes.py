import pytest

from aifactory.models import Recipe
from aifactory.recipes import Catalog, RecipeNotFound, builtin_recipes


def test_builtin_catalog_has_the_demo_recipe():
    recipe = builtin_recipes()["embeddings/minilm"]
    assert recipe.runtime.value == "native" and recipe.openai_api and "{port}" in recipe.command


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "embeddings/../x", "a/b/c", ""])
def test_paths_cannot_leave_the_catalog(path):
    with pytest.raises(RecipeNotFound):
        Catalog().get(path)


def test_bare_name_and_overrides():
    assert Catalog().get("minilm").path == "embeddings/minilm"
    own = Recipe(name="minilm", category="embeddings", description="site's own", runtime="native")
    assert Catalog({"embeddings/minilm": own}).get("embeddings/minilm").description == "site's own"
    with pytest.raises(RecipeNotFound, match="Recipe 'nope/x' not found"):
        Catalog().get("nope/x")
