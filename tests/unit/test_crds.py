from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from aifactory.crds import all_crds, render
from aifactory.models import AIServiceSpec, Phase, Resources

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_checked_in_crds_are_generated_from_the_models():
    for name, crd in all_crds().items():
        assert (CRDS / name).read_text() == render(crd), f"crds/{name} is stale: run `aifactory crds`"


def walk(schema, path="$"):
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("name", list(all_crds()))
def test_schemas_are_structural_and_documented(name):
    version = all_crds()[name]["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    for path, node in walk(root):
        assert "type" in node, f"{path} has no type (structural schemas need one)"
        for banned in ("$ref", "anyOf", "patternProperties", "title", "$defs"):
            assert banned not in node, f"{path} uses {banned}"
        if path.startswith(("$.spec", "$.status")) and path.count(".") >= 2 and not path.endswith(("{}", "[]")):
            assert node.get("description"), f"{path} has no description"


def test_aiservice_crd_contract():
    crd = all_crds()["aifactory.io_aiservices.yaml"]
    names = crd["spec"]["names"]
    assert (names["plural"], names["shortNames"], names["categories"]) == ("aiservices", ["ais"], ["aifactory"])
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Phase", "Recipe", "Job", "Node", "Endpoint", "Age"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["recipe"]
    assert set(spec["properties"]["resources"]["properties"]) == {"cpu", "memory", "gpu", "timeLimit", "nodes"}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == [p.value for p in Phase]
    assert {"jobId", "node", "endpoint", "slurmState", "message", "observedGeneration", "conditions"} <= set(status)


def test_slurmcluster_is_cluster_scoped():
    crd = all_crds()["aifactory.io_slurmclusters.yaml"]
    assert crd["spec"]["scope"] == "Cluster"
    yaml.safe_load(render(crd))


def test_spec_accepts_wire_and_python_names_and_checks_env_names():
    spec = AIServiceSpec.model_validate({"recipe": "inference/vllm", "resources": {"timeLimit": 30, "cpu": "8"}})
    assert spec.resources.time_limit == 30 and spec.resources.cpu == 8
    assert Resources(time_limit=5).wire() == {"timeLimit": 5}
    with pytest.raises(ValidationError, match="env"):
        AIServiceSpec.model_validate({"recipe": "x", "env": {"BAD-NAME": "1"}})
    with pytest.raises(ValidationError, match="memory"):
        AIServiceSpec.model_validate({"recipe": "x", "resources": {"memory": "lots"}})
    with pytest.raises(ValidationError, match="recipe"):
        AIServiceSpec.model_validate({})
