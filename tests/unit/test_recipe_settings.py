"""Recipes' named settings (LMStack's model and config, the console's form) and pinning a service to a node."""

import pytest
from pydantic import ValidationError

from aifactory.lifecycle import ServiceRef, job_request
from aifactory.models import ENV_PLACEHOLDER, AIServiceSpec, Recipe, SlurmClusterSpec
from aifactory.recipes import builtin_recipes


def test_every_builtin_setting_reaches_the_service():
    """A setting's variable is one the recipe's command reads ({env:NAME}) or the server reads itself."""
    read_by_server = {"OPENAI_TEST_MODEL", "OPENAI_TEST_STARTUP_DELAY", "EMBEDDINGS_MODEL"}
    for path, recipe in builtin_recipes().items():
        placeholders = {name for arg in [*recipe.command, *recipe.args] for name in ENV_PLACEHOLDER.findall(arg)}
        for name, setting in recipe.settings.items():
            assert setting.env in placeholders | read_by_server, f"{path}: setting {name} reaches nothing"
        if recipe.model_setting:
            assert recipe.model_setting in recipe.settings
    assert builtin_recipes()["inference/vllm"].settings["gpu_memory_utilization"].env == "VLLM_GPU_MEMORY_UTILIZATION"


def test_the_model_setting_must_be_a_setting():
    with pytest.raises(ValidationError, match="modelSetting: 'model' is not one of the recipe's settings"):
        Recipe(name="x", category="c", runtime="native", command=["x"], model_setting="model")


def test_a_pinned_service_asks_slurm_for_its_node():
    recipe = Recipe(name="x", category="c", runtime="native", command=["x"])
    cluster = SlurmClusterSpec(url="http://slurm", working_directory="/w")
    ref = ServiceRef("ns", "svc", "uid-1")
    assert job_request(ref, AIServiceSpec(recipe="c/x", nodelist="vm"), recipe, cluster).nodelist == "vm"
    assert job_request(ref, AIServiceSpec(recipe="c/x"), recipe, cluster).nodelist is None
    with pytest.raises(ValidationError):
        AIServiceSpec(recipe="c/x", nodelist="vm; rm -rf /")


def test_the_embeddings_server_refuses_a_model_it_does_not_have(monkeypatch):
    from aifactory.servers import embeddings

    monkeypatch.setenv("EMBEDDINGS_MODEL", "meta-llama/Llama-2-7b-chat-hf")
    with pytest.raises(SystemExit, match="serves only all-MiniLM-L6-v2"):
        embeddings.main(["--port", "1"])
