"""examples/: one AIService per built-in service recipe and a TrainingRun for the training recipe, each valid for
its model and naming a recipe that exists, and a kustomization that lists only files that are there."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from aifactory.recipes import Catalog, builtin_recipes

from aifactory.models import API_VERSION, AIServiceSpec, TrainingRunSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def manifests() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))
            if p.name != "kustomization.yaml"}


@pytest.mark.parametrize("filename", sorted(manifests()))
def test_every_example_is_a_valid_aiservice_of_an_existing_recipe(filename):
    doc = manifests()[filename]
    assert doc["apiVersion"] == API_VERSION and doc["kind"] in ("AIService", "TrainingRun")
    assert DNS_SUBDOMAIN.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63
    spec = (AIServiceSpec if doc["kind"] == "AIService" else TrainingRunSpec).model_validate(doc["spec"])
    Catalog().get(spec.recipe)  # raises RecipeNotFound


def test_every_builtin_recipe_has_an_example():
    shown = {doc["spec"].get("recipe") or TrainingRunSpec.model_validate(doc["spec"]).recipe
             for doc in manifests().values()}
    missing = sorted(set(builtin_recipes()) - shown)
    assert not missing, f"no example in examples/ for {missing}"


def test_the_demo_is_demo_embeddings_on_minilm():
    demo = manifests()["embeddings-minilm.yaml"]
    assert demo["metadata"]["name"] == "demo-embeddings" and demo["spec"]["recipe"] == "embeddings/minilm"


def test_example_names_are_unique():
    names = [doc["metadata"]["name"] for doc in manifests().values()]
    assert len(names) == len(set(names))


def test_the_kustomization_lists_existing_examples_and_no_namespace():
    kustomization = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())
    assert kustomization["resources"], "the kustomization lists nothing"
    for resource in kustomization["resources"]:
        assert resource in manifests(), resource
    # The GitOps tool's destination decides the namespace.
    assert "namespace" not in kustomization
    commented = re.findall(r"#\s*-\s*(\S+\.yaml)", (EXAMPLES / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) | set(commented) == set(manifests())


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) not installed")
def test_kubectl_kustomize_builds_it():
    built = subprocess.run(["kubectl", "kustomize", str(EXAMPLES)], capture_output=True, text=True, timeout=60,
                           check=False)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert {d["metadata"]["name"] for d in docs} >= {"demo-embeddings"}
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "aifactory" for d in docs)
