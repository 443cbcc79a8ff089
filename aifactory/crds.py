"""CustomResourceDefinitions generated from the pydantic models (`aifactory crds` writes them into crds/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from aifactory.models import (
    GROUP, VERSION, AIServiceSpec, AIServiceStatus, ApiKeySpec, ApiKeyStatus, Recipe, ServiceRecipeStatus,
    SlurmClusterSpec, SlurmClusterStatus, TenantSpec, TenantStatus, TrainingRunSpec, TrainingRunStatus, UserSpec,
)
from aifactory.models import Model as _Model

# JSON-schema keys that a structural Kubernetes schema does not allow or does not need.
_DROPPED = {"title", "$defs", "additionalProperties_false"}


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema as a structural OpenAPI v3 schema: refs inlined, nullables folded."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return _structural(raw, defs)


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            # `X | None`: Kubernetes has no null type; an absent field is how "unset" is said.
            return _structural({**options[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "default" and value in (None, ""):  # 1.20 reads an empty-string default as null
            continue
        if key in ("propertyNames", "patternProperties"):
            # Structural schemas cannot constrain map keys; the models check env names again.
            if key == "patternProperties":
                out["additionalProperties"] = _structural(next(iter(value.values())), defs)
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020 says `exclusiveMinimum: 0`; OpenAPI v3.0 says `minimum: 0, exclusiveMinimum: true`.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _structural(value, defs)
    return out


def _crd(kind: str, plural: str, scope: str, spec: type[BaseModel], status: type[BaseModel],
         short_names: list[str], columns: list[dict[str, Any]], description: str) -> dict[str, Any]:
    spec_schema = openapi_schema(spec)
    spec_schema["description"] = (spec.__doc__ or "").strip()
    status_schema = openapi_schema(status)
    status_schema["description"] = (status.__doc__ or "").strip() or "Observed state."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["aifactory"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def aiservice_crd() -> dict[str, Any]:
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Recipe", "type": "string", "jsonPath": ".spec.recipe"},
        {"name": "Job", "type": "string", "jsonPath": ".status.jobId"},
        {"name": "Node", "type": "string", "jsonPath": ".status.node"},
        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Cluster", "type": "string", "jsonPath": ".spec.cluster", "priority": 1},
        {"name": "Slurm", "type": "string", "jsonPath": ".status.slurmState", "priority": 1},
        {"name": "Pending-Reason", "type": "string", "jsonPath": ".status.pendingReason", "priority": 1},
        {"name": "Expected-Start", "type": "string", "jsonPath": ".status.expectedStart", "priority": 1},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    ]
    return _crd("AIService", "aiservices", "Namespaced", AIServiceSpec, AIServiceStatus, ["ais"], columns,
                "An AI service (inference, embeddings, vector database, notebook, ...) run as a Slurm job.")


def slurmcluster_crd() -> dict[str, Any]:
    columns = [
        {"name": "URL", "type": "string", "jsonPath": ".spec.url"},
        {"name": "API", "type": "string", "jsonPath": ".status.apiVersion"},
        {"name": "Reachable", "type": "boolean", "jsonPath": ".status.reachable"},
        {"name": "Nodes-Up", "type": "integer", "jsonPath": ".status.nodes.up"},
        {"name": "Nodes", "type": "integer", "jsonPath": ".status.nodes.total", "priority": 1},
        {"name": "GPUs-Free", "type": "integer", "jsonPath": ".status.nodes.gpusFree"},
        {"name": "GPUs", "type": "integer", "jsonPath": ".status.nodes.gpus", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd("SlurmCluster", "slurmclusters", "Cluster", SlurmClusterSpec, SlurmClusterStatus, ["slc"],
                columns, "How aifactory reaches one Slurm cluster.")


def servicerecipe_crd() -> dict[str, Any]:
    columns = [
        {"name": "Path", "type": "string", "jsonPath": ".status.path"},
        {"name": "Runtime", "type": "string", "jsonPath": ".spec.runtime"},
        {"name": "Accepted", "type": "boolean", "jsonPath": ".status.accepted"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Image", "type": "string", "jsonPath": ".spec.image", "priority": 1},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    ]
    return _crd("ServiceRecipe", "servicerecipes", "Cluster", Recipe, ServiceRecipeStatus, ["srec"], columns,
                "A recipe the cluster adds to the catalog (or overrides a built-in one with): category/name.")


def tenant_crd() -> dict[str, Any]:
    columns = [
        {"name": "Namespace", "type": "string", "jsonPath": ".status.namespace"},
        {"name": "Account", "type": "string", "jsonPath": ".spec.slurm.account"},
        {"name": "Slurm-User", "type": "string", "jsonPath": ".spec.slurm.user"},
        {"name": "Max-Running", "type": "integer", "jsonPath": ".spec.quotas.maxRunningServices"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Description", "type": "string", "jsonPath": ".spec.description", "priority": 1},
    ]
    return _crd("Tenant", "tenants", "Cluster", TenantSpec, TenantStatus, ["tn"], columns,
                "A tenant: a namespace whose services run under its Slurm account, within its quotas.")


def apikey_crd() -> dict[str, Any]:
    columns = [
        {"name": "Display-Name", "type": "string", "jsonPath": ".spec.displayName"},
        {"name": "Role", "type": "string", "jsonPath": ".spec.role"},
        {"name": "Prefix", "type": "string", "jsonPath": ".spec.prefix"},
        {"name": "Owner", "type": "string", "jsonPath": ".spec.owner"},
        {"name": "Expires", "type": "string", "jsonPath": ".spec.expiresAt"},
        {"name": "Last-Used", "type": "string", "jsonPath": ".status.lastUsed"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd("ApiKey", "apikeys", "Namespaced", ApiKeySpec, ApiKeyStatus, ["aik"], columns,
                "An API key of the namespace's tenant; only its sha256 is stored. Delete it to revoke the key.")


class _NoStatus(_Model):
    """Nothing observed."""


def user_crd() -> dict[str, Any]:
    columns = [
        {"name": "Username", "type": "string", "jsonPath": ".spec.username"},
        {"name": "Email", "type": "string", "jsonPath": ".spec.email"},
        {"name": "Admin", "type": "boolean", "jsonPath": ".spec.isAdmin"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd("User", "users", "Namespaced", UserSpec, _NoStatus, ["aiu"], columns,
                "A person of the namespace's tenant who owns API keys; the password is kept only as a hash.")


def trainingrun_crd() -> dict[str, Any]:
    columns = [
        {"name": "State", "type": "string", "jsonPath": ".status.state"},
        {"name": "Epoch", "type": "integer", "jsonPath": ".status.currentEpoch"},
        {"name": "Epochs", "type": "integer", "jsonPath": ".spec.hyperparameters.epochs"},
        {"name": "Loss", "type": "number", "jsonPath": ".status.latest.loss"},
        {"name": "Accuracy", "type": "number", "jsonPath": ".status.latest.accuracy"},
        {"name": "Job", "type": "string", "jsonPath": ".status.jobId"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Architecture", "type": "string", "jsonPath": ".spec.architecture", "priority": 1},
        {"name": "Dataset", "type": "string", "jsonPath": ".spec.dataset", "priority": 1},
        {"name": "Val-Accuracy", "type": "number", "jsonPath": ".status.latest.valAccuracy", "priority": 1},
        {"name": "Model", "type": "string", "jsonPath": ".status.model", "priority": 1},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    ]
    return _crd("TrainingRun", "trainingruns", "Namespaced", TrainingRunSpec, TrainingRunStatus, ["tr"], columns,
                "A model trained as a Slurm job (seed 002's training session): epochs, metrics, the trained model "
                "in the tenant's registry.")


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD, in the order they are applied."""
    return {
        "aifactory.io_aiservices.yaml": aiservice_crd(),
        "aifactory.io_slurmclusters.yaml": slurmcluster_crd(),
        "aifactory.io_servicerecipes.yaml": servicerecipe_crd(),
        "aifactory.io_tenants.yaml": tenant_crd(),
        "aifactory.io_apikeys.yaml": apikey_crd(),
        "aifactory.io_users.yaml": user_crd(),
        "aifactory.io_trainingruns.yaml": trainingrun_crd(),
    }


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `aifactory crds` from aifactory/models.py; do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=120)


def write_crds(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, crd in all_crds().items():
        path = directory / filename
        path.write_text(render(crd))
        written.append(path)
    return written
