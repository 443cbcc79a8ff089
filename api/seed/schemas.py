"""Request and response bodies of the REST API, built on aifactory.models.

The REST API of the seed uses Python-style names (`time_limit`, `openai_api`) where Kubernetes uses camelCase, so
the models of aifactory.models appear here as derived views with their field names on the wire: the same fields,
constraints and validators, defined once.
"""

from __future__ import annotations

import copy
import warnings
from enum import Enum
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from aifactory.api.aiservices import visible_env
from aifactory.models import (
    AIServiceSpec,
    AIServiceStatus,
    Attempt,
    EnvMap,
    FailureInfo,
    Model,
    Phase,
    PreflightResult,
    Recipe,
    Resources,
)


@cache
def python_names(model: type[Model]) -> type[Model]:
    """`model` with its Python field names as the JSON names (nested aifactory models likewise)."""
    base = type(f"_{model.__name__}", (model,), {"model_config": ConfigDict(alias_generator=None)})
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        field = copy.copy(info)
        field.alias = field.validation_alias = field.serialization_alias = None
        field.alias_priority = None
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, Model):
            annotation = python_names(annotation)
        fields[name] = (annotation, field)
    return create_model(model.__name__, __base__=base, __module__=__name__, __doc__=model.__doc__, **fields)


ServiceResources = python_names(Resources)
ServiceAttempt = python_names(Attempt)
ServiceFailure = python_names(FailureInfo)


def _wire_of(model: type[Model], value: Model | None) -> Model | None:
    return model.model_validate(value.model_dump()) if value is not None else None


class ServiceConfig(BaseModel):
    """What the service gets beyond its recipe's defaults."""

    model_config = ConfigDict(extra="forbid")

    environment: EnvMap = Field(default_factory=dict, description=AIServiceSpec.model_fields["env"].description)
    resources: ServiceResources = Field(  # type: ignore[valid-type]
        default_factory=ServiceResources, description=AIServiceSpec.model_fields["resources"].description)
    partition: str | None = Field(None, description=AIServiceSpec.model_fields["partition"].description)
    account: str | None = Field(None, description=AIServiceSpec.model_fields["account"].description)
    qos: str | None = Field(None, description=AIServiceSpec.model_fields["qos"].description)
    cluster: str | None = Field(None, description=AIServiceSpec.model_fields["cluster"].description)

    def spec_fields(self) -> dict:
        """The spec fields beyond env and resources that the request sets."""
        fields = (("partition", self.partition), ("account", self.account), ("qos", self.qos),
                  ("cluster", self.cluster))
        return {k: v for k, v in fields if v is not None}


class ServiceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "recipe_name": "inference/vllm",
        "config": {"environment": {"VLLM_MODEL": "Qwen/Qwen2.5-0.5B-Instruct", "VLLM_MAX_MODEL_LEN": "2048"},
                   "resources": {"cpu": "8", "memory": "32G", "gpu": "1", "time_limit": 60}},
    }]})

    recipe_name: str = Field(..., min_length=1, description=AIServiceSpec.model_fields["recipe"].description)
    config: ServiceConfig = Field(default_factory=ServiceConfig)


def _config_of(spec: dict) -> ServiceConfig:
    try:
        parsed = AIServiceSpec.model_validate(spec)
    except ValidationError:
        # A resource written with kubectl may hold what the CRD allows but the model not; show it still.
        return ServiceConfig()
    return ServiceConfig(environment=parsed.env, resources=ServiceResources(**parsed.resources.model_dump()),
                         partition=parsed.partition, account=parsed.account, qos=parsed.qos,
                         cluster=parsed.cluster)


def _status_of(obj: dict) -> AIServiceStatus:
    try:
        return AIServiceStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        return AIServiceStatus()


# The seed API's seven status values: it knows no `stopped`, and a stopped service's job was cancelled.
SeedPhase = Enum("SeedPhase", {p.name: p.value for p in Phase if p is not Phase.stopped}, type=str)


def seed_phase(phase: Phase | None) -> SeedPhase:
    if phase is None:
        return SeedPhase.pending
    return SeedPhase.cancelled if phase is Phase.stopped else SeedPhase(phase.value)


def _message(obj: dict, status: AIServiceStatus) -> str | None:
    if obj.get("metadata", {}).get("deletionTimestamp") and not (status.phase and status.phase.finished):
        return "Stopping: waiting for Slurm to confirm that the job ended"
    return status.message


class ServiceStatusResponse(BaseModel):
    status: SeedPhase = Field(..., description=AIServiceStatus.model_fields["phase"].description)
    slurm_state: str | None = Field(None, description=AIServiceStatus.model_fields["slurm_state"].description)
    job_id: str | None = Field(None, description=AIServiceStatus.model_fields["job_id"].description)
    node: str | None = Field(None, description=AIServiceStatus.model_fields["node"].description)
    message: str | None = Field(None, description=AIServiceStatus.model_fields["message"].description)
    pending_reason: str | None = Field(None, description=AIServiceStatus.model_fields["pending_reason"].description)
    expected_start: str | None = Field(None, description=AIServiceStatus.model_fields["expected_start"].description)
    last_failure: ServiceFailure | None = Field(  # type: ignore[valid-type]
        None, description=AIServiceStatus.model_fields["last_failure"].description)
    restart_count: int | None = Field(None, description=AIServiceStatus.model_fields["restart_count"].description)
    next_attempt_time: str | None = Field(
        None, description=AIServiceStatus.model_fields["next_attempt_time"].description)
    attempts: list[ServiceAttempt] = Field(  # type: ignore[valid-type]
        default_factory=list, description=AIServiceStatus.model_fields["attempts"].description)

    @classmethod
    def of(cls, obj: dict) -> "ServiceStatusResponse":
        status = _status_of(obj)
        return cls(status=seed_phase(status.phase), slurm_state=status.slurm_state, job_id=status.job_id,
                   node=status.node, message=_message(obj, status), pending_reason=status.pending_reason,
                   expected_start=status.expected_start,
                   last_failure=_wire_of(ServiceFailure, status.last_failure), restart_count=status.restart_count,
                   next_attempt_time=status.next_attempt_time,
                   attempts=[_wire_of(ServiceAttempt, a) for a in status.attempts])


class ServiceResponse(BaseModel):
    id: str = Field(..., description="The service's id: its AIService name.")
    name: str = Field(..., description="The AIService name.")
    namespace: str = Field(..., description="The AIService namespace.")
    recipe_name: str = Field(..., description=AIServiceSpec.model_fields["recipe"].description)
    status: SeedPhase = Field(..., description=AIServiceStatus.model_fields["phase"].description)
    config: ServiceConfig
    created_at: str | None = Field(None, description="When the AIService was created (RFC 3339).")
    job_id: str | None = Field(None, description=AIServiceStatus.model_fields["job_id"].description)
    node: str | None = Field(None, description=AIServiceStatus.model_fields["node"].description)
    endpoint: str | None = Field(None, description=AIServiceStatus.model_fields["endpoint"].description)
    slurm_state: str | None = Field(None, description=AIServiceStatus.model_fields["slurm_state"].description)
    message: str | None = Field(None, description=AIServiceStatus.model_fields["message"].description)
    pending_reason: str | None = Field(None, description=AIServiceStatus.model_fields["pending_reason"].description)
    expected_start: str | None = Field(None, description=AIServiceStatus.model_fields["expected_start"].description)
    last_failure: ServiceFailure | None = Field(  # type: ignore[valid-type]
        None, description=AIServiceStatus.model_fields["last_failure"].description)
    restart_count: int | None = Field(None, description=AIServiceStatus.model_fields["restart_count"].description)

    @classmethod
    def of(cls, obj: dict, owner: bool = True) -> "ServiceResponse":
        """`owner`: whether the caller's tenant owns the service (only then are environment values shown)."""
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        status = _status_of(obj)
        config = _config_of(spec)
        if not owner:
            config = config.model_copy(update={"environment": visible_env(config.environment, owner)})
        return cls(id=meta.get("name", ""), name=meta.get("name", ""), namespace=meta.get("namespace", ""),
                   recipe_name=str(spec.get("recipe", "")), status=seed_phase(status.phase),
                   config=config, created_at=meta.get("creationTimestamp"), job_id=status.job_id,
                   node=status.node, endpoint=status.endpoint, slurm_state=status.slurm_state,
                   message=_message(obj, status), pending_reason=status.pending_reason,
                   expected_start=status.expected_start,
                   last_failure=_wire_of(ServiceFailure, status.last_failure), restart_count=status.restart_count)


PreflightResponse = python_names(PreflightResult)
PreflightResponse.__doc__ = PreflightResult.__doc__


class StopResponse(BaseModel):
    message: str = Field(..., examples=["Service stopped successfully"])
    job_id: str | None = Field(None, description="The Slurm job that is being cancelled.")


class LogsResponse(BaseModel):
    logs: str = Field(..., description="The tail of the job's stdout and stderr, or why there is none yet.")
    job_id: str | None = Field(None, description="The Slurm job whose output this is.")
    attempt: int | None = Field(None, description="Which of the service's jobs it is (1 = its first).")


with warnings.catch_warnings():
    # `path` is a property of Recipe; here it becomes a field of the same value.
    warnings.filterwarnings("ignore", message='Field name "path"')

    class RecipeResponse(python_names(Recipe)):  # type: ignore[misc]
        """A recipe of the catalog with its defaults."""

        path: str = Field(..., description="category/name: what `recipe_name` takes.")

        @classmethod
        def of(cls, recipe: Recipe) -> "RecipeResponse":
            return cls.model_validate({**recipe.model_dump(), "path": recipe.path})


class VllmService(BaseModel):
    id: str
    name: str
    recipe_name: str
    endpoint: str | None = None
    status: SeedPhase


class VllmServicesResponse(BaseModel):
    vllm_services: list[VllmService]


class ModelsResponse(BaseModel):
    models: list[str] = Field(..., description="The model ids the service serves (its /v1/models).")
    data: list[dict[str, Any]] = Field(default_factory=list, description="The service's /v1/models entries as sent.")


class PromptRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"prompt": "Explain quantum computing in simple terms.", "max_tokens": 100, "temperature": 0.7}]})

    prompt: str = Field(..., min_length=1, description="The prompt; sent as one user message.")
    max_tokens: int = Field(150, ge=1, le=1_000_000, description="Most tokens to generate.")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature.")
    model: str | None = Field(None, description="Model to use; default: the first the service lists.")


class PromptResponse(BaseModel):
    success: Literal[True] = True
    response: str = Field(..., description="The generated text.")
    model: str
    tokens_used: int | None = Field(None, description="Prompt plus generated tokens, as the service counts them.")
    endpoint_used: Literal["chat", "completions"] = Field(
        ..., description="chat, or completions when the model has no chat template.")
    usage: dict[str, Any] | None = Field(None, description="The service's usage object as sent.")
    service_id: str
    endpoint: str = Field(..., description="The service endpoint that answered.")


class HealthResponse(BaseModel):
    """Every seed's health body at once: 000's {status, version}, 002's {status, service, version}, 004's {status}."""

    status: Literal["healthy"] = "healthy"
    service: str
    version: str


class RootResponse(BaseModel):
    service: str
    version: str
    status: Literal["running"] = "running"
    docs: str
    redoc: str
    openapi: str
    api: str


# Error bodies (documented per route with `responses=`).

class ErrorDetail(BaseModel):
    detail: str = Field(..., examples=["Service not found"])


class ServiceUnavailableBody(BaseModel):
    error: str = Field("Service not available")
    message: str = Field(..., examples=["The service may still be starting up. Please wait and try again."])
    details: str = Field(..., description="Why: the service's phase, or the connection error.")


class UpstreamErrorBody(BaseModel):
    error: str = Field("Upstream error")
    message: str = Field(..., description="The service's own error message.")
    upstream_status: int | None = Field(None, description="The HTTP status the service answered.")
    details: str | None = None
