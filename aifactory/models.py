"""The resources of aifactory as pydantic models: the one definition the CRDs, the operator and the REST API share.

Field names are Kubernetes-style camelCase on the wire (aliases) and snake_case in Python; both are accepted.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

GROUP = "aifactory.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MEMORY_PATTERN = r"^[0-9]+([KMGT]i?B?)?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict:
        """The object as Kubernetes stores it: camelCase, without unset fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Phase(str, Enum):
    """Where a service is in its life; the seven values of the AI Factory Server API."""

    pending = "pending"
    building = "building"
    starting = "starting"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (Phase.completed, Phase.failed, Phase.cancelled)


EnvMap = dict[Annotated[str, Field(pattern=ENV_NAME_PATTERN)], str]


class Resources(Model):
    """What the Slurm job asks for. Unset fields take the recipe's defaults."""

    cpu: int | None = Field(None, ge=1, description="CPUs per task (Slurm cpus_per_task).")
    memory: str | None = Field(
        None, pattern=MEMORY_PATTERN, description='Memory per node, e.g. "32G" or "512M" (Slurm --mem).'
    )
    gpu: int | None = Field(None, ge=0, description="GPUs per node; 0 or unset for CPU-only services.")
    time_limit: int | None = Field(None, ge=1, description="Wall-clock limit of the job in minutes.")
    nodes: int | None = Field(None, ge=1, description="Number of nodes.")

    @field_validator("cpu", "gpu", mode="before")
    @classmethod
    def _blank_is_unset(cls, value):
        # The REST API's clients send "gpu": null or "" for CPU-only services.
        return None if value == "" else value

    def over(self, defaults: "Resources") -> "Resources":
        """These resources with unset fields filled from defaults."""
        merged = defaults.model_dump()
        merged.update({k: v for k, v in self.model_dump().items() if v is not None})
        return Resources(**merged)


class AIServiceSpec(Model):
    """An AI service to run on a Slurm cluster, made from a recipe."""

    recipe: str = Field(
        ..., min_length=1, description="Recipe path in the catalog, e.g. inference/vllm or embeddings/minilm."
    )
    env: EnvMap = Field(
        default_factory=dict,
        description="Environment variables for the service process; values reach it byte for byte.",
    )
    resources: Resources = Field(default_factory=Resources, description="Overrides of the recipe's resources.")
    cluster: str = Field("default", description="Name of the SlurmCluster to run on.")
    partition: str | None = Field(None, description="Slurm partition; default from the SlurmCluster.")
    account: str | None = Field(None, description="Slurm account; default from the SlurmCluster.")
    qos: str | None = Field(None, description="Slurm QOS; default from the SlurmCluster.")


class Condition(Model):
    """A Kubernetes-style condition (metav1.Condition)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    type: str = Field(..., description="Condition type, e.g. Ready.")
    status: str = Field(..., description="True, False or Unknown.", pattern="^(True|False|Unknown)$")
    reason: str = Field("", description="One CamelCase word saying why.")
    message: str = Field("", description="What happened, in words.")
    last_transition_time: str | None = Field(None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="The spec generation this condition is about.")


class AIServiceStatus(Model):
    """What the operator observed; written only by the operator."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    phase: Phase | None = Field(None, description="pending, building, starting, running, completed, failed or cancelled.")
    job_id: str | None = Field(None, description="Slurm job id.")
    node: str | None = Field(None, description="Node the job runs on.")
    endpoint: str | None = Field(None, description="URL of the running service.")
    slurm_state: str | None = Field(None, description="The job state as Slurm reports it.")
    message: str | None = Field(None, description="Why the service is in this phase (Slurm's reason, exit code, ...).")
    observed_generation: int | None = Field(None, description="The spec generation the status describes.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready and the other conditions.")


class Runtime(str, Enum):
    apptainer = "apptainer"
    native = "native"


class Recipe(Model):
    """A kind of AI service: what to run, how to reach it and what it needs by default."""

    name: str = Field(..., pattern=DNS_LABEL_PATTERN, description="Recipe name, unique within its category.")
    category: str = Field(..., pattern=DNS_LABEL_PATTERN, description="Category, e.g. inference or embeddings.")
    description: str = Field("", description="What the service is.")
    version: str = Field("1.0", description="Recipe version.")
    runtime: Runtime = Field(Runtime.apptainer, description="apptainer (a container) or native (a command on the node).")
    image: str | None = Field(
        None, description="Container image: docker://..., oras://... or a .sif path (runtime apptainer)."
    )
    build: str | None = Field(None, description="Apptainer definition file text to build the image from.")
    command: list[str] = Field(
        default_factory=list,
        description="Command and arguments, each passed as one argument; {port} and {host} are replaced.",
    )
    port_env: str | None = Field(
        None, pattern=ENV_NAME_PATTERN, description="Environment variable that tells the service its port."
    )
    health_path: str = Field("/health", pattern=r"^/", description="HTTP path that answers 200 once the service is up.")
    startup_grace_seconds: int = Field(
        900, ge=1, description="How long start-up (image pull or build, model load) may take before the service fails."
    )
    environment: EnvMap = Field(default_factory=dict, description="Default environment; the service's env overrides it.")
    resources: Resources = Field(default_factory=Resources, description="Default resources.")
    binds: list[str] = Field(default_factory=list, description="Apptainer bind mounts (src[:dest[:opts]]).")
    openai_api: bool = Field(False, description="Whether the service speaks the OpenAI HTTP API (/v1/models, ...).")

    @property
    def path(self) -> str:
        return f"{self.category}/{self.name}"


class SecretKeyRef(Model):
    """A key of a Secret."""

    name: str = Field(..., description="Secret name.")
    namespace: str | None = Field(None, description="Secret namespace; default: the operator's namespace.")
    key: str = Field("token", description="Key in the Secret's data.")


class SlurmClusterSpec(Model):
    """How to reach one Slurm cluster and what its jobs get by default."""

    url: str = Field(..., description="slurmrestd base URL, e.g. http://127.0.0.1:6820.")
    user: str = Field("root", description="Slurm user the jobs run as (X-SLURM-USER-NAME).")
    token_secret_ref: SecretKeyRef | None = Field(None, description="Secret holding the slurmrestd JWT.")
    api_version: str | None = Field(
        None, pattern=r"^v0\.0\.[0-9]+$", description="Pin the slurmrestd API version; detected when unset."
    )
    partition: str | None = Field(None, description="Default partition.")
    account: str | None = Field(None, description="Default account.")
    qos: str | None = Field(None, description="Default QOS.")
    working_directory: str = Field(..., description="Job working directory on the cluster; job logs go here.")
    job_environment: EnvMap = Field(
        default_factory=dict,
        description="Environment every job of this cluster gets (e.g. PATH); the service's env comes on top.",
    )
    bind_address: str = Field("0.0.0.0", description="Address services bind to on the compute node.")
    local_logs: bool = Field(
        False, description="Job output files are readable on this side's filesystem (shared filesystem, local stack)."
    )
    poll_interval_seconds: float = Field(5.0, gt=0, description="How often the one poller of this cluster asks Slurm.")


class SlurmClusterStatus(Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: str | None = Field(None, description="The slurmrestd API version in use.")
    reachable: bool | None = Field(None, description="Whether the last poll reached slurmrestd.")
    message: str | None = Field(None, description="The last error, in the outside system's words.")
    conditions: list[Condition] = Field(default_factory=list, description="Reachable and other conditions.")
