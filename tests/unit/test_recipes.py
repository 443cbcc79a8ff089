import pytest

from aifactory.models import Recipe
from aifactory.recipes import Catalog, RecipeInvalid, RecipeNotFound, builtin_recipes, recipe_from_resource


def test_builtin_catalog_has_the_demo_recipe():
    recipe = builtin_recipes()["embeddings/minilm"]
    assert recipe.runtime.value == "native" and recipe.openai_api and "{port}" in recipe.command


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "embeddings/../x", "a/b/c", ""])
def test_paths_cannot_leave_the_catalog(path):
    with pytest.raises(RecipeNotFound):
        Catalog().get(path)


def test_bare_name_and_overrides():
    assert Catalog().get("minilm").path == "embeddings/minilm"
    own = Recipe(name="minilm", category="embeddings", description="site's own", runtime="native", command=["serve"])
    assert Catalog({"embeddings/minilm": own}).get("embeddings/minilm").description == "site's own"
    with pytest.raises(RecipeNotFound, match="Recipe 'nope/x' not found"):
        Catalog().get("nope/x")


BUILTIN = ["inference/vllm", "inference/sglang", "inference/tgi", "inference/llama-cpp", "inference/ollama",
           "embeddings/tei", "embeddings/minilm", "vector-db/qdrant", "vector-db/chroma", "storage/minio",
           "notebook/jupyter", "testing/openai-echo", "training/pytorch"]


def test_the_catalog_ships_every_documented_recipe():
    assert sorted(builtin_recipes()) == sorted(BUILTIN)
    for path, recipe in builtin_recipes().items():
        assert recipe.path == path and recipe.description and recipe.health_path.startswith("/")
        words = " ".join(recipe.command + recipe.args)
        if not recipe.port and recipe.category != "training":  # a training run serves nothing
            assert "{port}" in words or recipe.port_env, f"{path}: the service is never told its port"


def test_vllm_takes_the_seed_variables_with_defaults():
    vllm = builtin_recipes()["inference/vllm"]
    assert vllm.environment["VLLM_MODEL"] == "Qwen/Qwen2.5-0.5B-Instruct"
    for name in ("VLLM_MODEL", "VLLM_MAX_MODEL_LEN", "VLLM_GPU_MEMORY_UTILIZATION", "VLLM_TENSOR_PARALLEL_SIZE"):
        assert f"{{env:{name}}}" in vllm.command and name in vllm.environment
    assert vllm.command[:2] == ["vllm", "serve"] and vllm.resources.gpu == 1 and vllm.openai_api


@pytest.mark.parametrize("spec, field", [
    ({"runtime": "apptainer"}, "image:"),
    ({"runtime": "apptainer", "image": "https://example.org/x"}, "image:"),
    ({"runtime": "native"}, "command:"),
    ({"runtime": "native", "command": ["x", "{env:A B}"]}, "command:"),
    ({"runtime": "native", "command": ["x"], "environment": {"BAD NAME": "1"}}, "environment."),
    ({"runtime": "native", "command": ["x"], "portEnv": "1X"}, "portEnv:"),
    ({"runtime": "apptainer", "image": "docker://x", "build": "Bootstrap: docker"}, "build:"),
])
def test_invalid_recipes_name_the_field(spec, field):
    body = {"metadata": {"name": "mine"}, "spec": {"name": "x", "category": "y", **spec}}
    with pytest.raises(RecipeInvalid) as caught:
        recipe_from_resource(body)
    assert str(caught.value).startswith("ServiceRecipe mine: ") and field in str(caught.value)


def test_a_service_recipe_spec_is_a_recipe_in_wire_form():
    spec = {"name": "echo", "category": "site", "runtime": "apptainer", "image": "docker://example.org/echo:1",
            "command": ["serve", "--port", "{port}"], "healthPath": "/ready", "startupGraceSeconds": 60,
            "openaiApi": True}
    recipe = recipe_from_resource({"metadata": {"name": "echo"}, "spec": spec})
    assert recipe.path == "site/echo" and recipe.health_path == "/ready" and recipe.openai_api
    assert recipe.wire() | spec == recipe.wire()
