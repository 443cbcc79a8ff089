"""The Helm chart, checked without a helm binary: values against values.schema.json, CRDs against crds/, the RBAC
rule files as data, and the templates' references to values."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from aifactory.models import SlurmClusterSpec

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "aifactory"


def schema() -> dict:
    return json.loads((CHART / "values.schema.json").read_text())


def defaults() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def errors(values: dict) -> list[str]:
    return [e.message for e in jsonschema.Draft7Validator(schema()).iter_errors(values)]


def error_paths(values: dict) -> list[str]:
    return [".".join(map(str, e.absolute_path)) for e in jsonschema.Draft7Validator(schema()).iter_errors(values)]


def test_the_schema_is_draft_07_and_the_default_values_pass():
    jsonschema.Draft7Validator.check_schema(schema())
    assert schema()["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert errors(defaults()) == []


def test_the_documented_overrides_pass():
    values = defaults()
    values["watch"]["namespaces"] = ["team-a", "team-b"]
    values["api"]["namespace"] = "team-a"
    values["slurm"]["jwt"] = {"existingSecret": "slurm-jwt", "key": "token"}
    values["slurmCluster"]["spec"].update(
        transport="ssh-cli", partition="gpu", ssh={"host": "login.example.org", "user": "svc", "knownHosts": "x"})
    values["serviceMonitor"] = {"enabled": True, "path": "/metrics", "interval": "15s", "labels": {"release": "p"}}
    assert errors(values) == []


def _set(values: dict, path: str, value) -> dict:
    out = copy.deepcopy(values)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return out


_DELETE = object()

BAD = [
    ("watch.namespaces", "all"),
    ("watch.namespaces", ["Team_A"]),
    ("watch.namespaces", ["a", "a"]),
    ("image.pullPolicy", "Sometimes"),
    ("image.repository", ""),
    ("api.port", 0),
    ("operator.livenessPort", 70000),
    ("operator.logLevel", "loud"),
    ("operator.env", {"1BAD": "x"}),
    ("api.service.type", "Ingress"),
    ("securityContext.runAsNonRoot", False),
    ("securityContext.readOnlyRootFilesystem", False),
    ("securityContext.allowPrivilegeEscalation", True),
    ("securityContext.capabilities", {"drop": ["NET_RAW"]}),
    ("securityContext.capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
    ("podSecurityContext.runAsNonRoot", False),
    ("slurmCluster.spec.transport", "carrier-pigeon"),
    ("slurmCluster.spec.url", "slurm:6820"),
    ("slurmCluster.spec.workingDirectory", "relative/dir"),
    ("slurmCluster.spec.pollIntervalSeconds", 0),
    ("slurmCluster.spec.pollInterval", 5),
    ("slurmCluster.spec", _DELETE),
    ("slurm.jwt.key", ""),
    ("serviceMonitor.interval", "often"),
    ("replicas", 2),
]


@pytest.mark.parametrize(("path", "value"), BAD, ids=[f"{p}={v!r}" for p, v in BAD])
def test_bad_values_are_rejected_at_the_bad_value(path, value):
    found = error_paths(_set(defaults(), path, value))
    assert found, f"{path}={value!r} was accepted"
    # Each error is about that value, a part of it, or the object that lacks or must not have it.
    related = lambda p: not p or p == path or path.startswith(f"{p}.") or p.startswith(f"{path}.")
    assert all(related(p) for p in found), found


def test_the_slurmcluster_spec_in_values_follows_the_model():
    """One source of truth: the schema knows exactly the model's fields, and the default spec (with the token
    reference the chart adds) is a valid SlurmClusterSpec."""
    in_schema = set(schema()["properties"]["slurmCluster"]["properties"]["spec"]["properties"])
    in_model = {field.alias or name for name, field in SlurmClusterSpec.model_fields.items()}
    assert in_schema == in_model
    spec = {**defaults()["slurmCluster"]["spec"],
            "tokenSecretRef": {"name": "aifactory-slurm-jwt", "namespace": "aifactory-system", "key": "token"}}
    SlurmClusterSpec.model_validate(spec)


def test_chart_crds_are_byte_for_byte_the_generated_ones():
    ours = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert sorted(chart) == sorted(ours), "run `make crds`"
    for name, text in ours.items():
        assert chart[name] == text, f"helm/aifactory/crds/{name} differs from crds/{name}: run `make crds`"


SCOPES = {"operator": {"cluster", "watched", "namespacedWatch", "release"},
          "api": {"cluster", "release"}}


@pytest.mark.parametrize("component", sorted(SCOPES))
def test_rbac_rule_files_are_plain_least_privilege_policy_rules(component):
    rules = yaml.safe_load((CHART / "files" / "rbac" / f"{component}-rules.yaml").read_text())
    assert set(rules) <= SCOPES[component]
    for scope, rule_list in rules.items():
        for rule in rule_list:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
            for key in ("apiGroups", "resources", "verbs"):
                assert rule[key] and all(isinstance(x, str) for x in rule[key]), rule
            assert "*" not in rule["resources"] + rule["verbs"] + rule["apiGroups"], rule
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
            if "secrets" in rule["resources"]:
                # Secrets only read one by name: the clusters' in the release namespace, and the operator's
                # in the namespaces it serves (a service's secretEnv names Secrets of its own namespace).
                allowed = {"release"} | ({"watched"} if component == "operator" else set())
                assert scope in allowed and rule["verbs"] == ["get"], rule


def test_the_operator_never_deletes_or_updates_what_it_serves():
    rules = yaml.safe_load((CHART / "files" / "rbac" / "operator-rules.yaml").read_text())
    for rule in [r for scoped in rules.values() for r in scoped]:
        if "aifactory.io" in rule["apiGroups"]:
            assert not {"create", "delete", "update"} & set(rule["verbs"]), rule


def _value_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _value_paths(value, (*prefix, key))


def test_every_value_the_templates_use_exists_in_values_yaml():
    """Without `helm template` here, this catches the typo a render would."""
    known = {".".join(p) for p in _value_paths(defaults())}
    used = set()
    for template in (CHART / "templates").glob("*"):
        used |= set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()))
    missing = sorted(u for u in used if u not in known)
    assert not missing, missing


def test_the_rule_files_the_templates_include_exist():
    text = (CHART / "templates" / "rbac.yaml").read_text()
    for component in re.findall(r'"component" "([a-z]+)"', text):
        assert (CHART / "files" / "rbac" / f"{component}-rules.yaml").is_file()


def test_operator_deployment_is_one_recreated_replica_with_kopf_liveness():
    text = (CHART / "templates" / "operator-deployment.yaml").read_text()
    assert re.search(r"^  replicas: 1$", text, re.MULTILINE)
    assert re.search(r"strategy:\n    type: Recreate", text)
    assert "path: /healthz" in text and "--liveness-port={{ .Values.operator.livenessPort }}" in text


def test_chart_app_version_is_the_package_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
