"""The resources of aifactory as pydantic models: the one definition the CRDs, the operator and the REST API share.

Field names are Kubernetes-style camelCase on the wire (aliases) and snake_case in Python; both are accepted.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "aifactory.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MEMORY_PATTERN = r"^[0-9]+([KMGT]i?B?)?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict:
        """The object as Kubernetes stores it: camelCase, without unset fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Phase(str, Enum):
    """Where a service is in its life: the seven values of the AI Factory Server API, and `stopped` (no job, kept
    to be started again; that API shows it as cancelled)."""

    pending = "pending"
    building = "building"
    starting = "starting"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    stopped = "stopped"

    @property
    def finished(self) -> bool:
        """No job runs (or will run) for the service until something starts it again."""
        return self in (Phase.completed, Phase.failed, Phase.cancelled, Phase.stopped)


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


class SecretEnvRef(Model):
    """Where an environment value comes from: one key of a Secret in the service's own namespace."""

    name: str = Field(..., pattern=DNS_SUBDOMAIN_PATTERN, description="Secret name (in the AIService's namespace).")
    key: str = Field(..., min_length=1, description="Key in the Secret's data.")


class RestartPolicy(str, Enum):
    never = "Never"
    on_failure = "OnFailure"


class RestartSpec(Model):
    """What happens when a job of the service fails (llamactl's auto-restart and max_restarts)."""

    policy: RestartPolicy = Field(
        RestartPolicy.never, description="Never, or OnFailure: a new job after a failure (not after a cancel). "
        "A node failure or preemption is requeued under either policy.")
    max_restarts: int = Field(3, ge=0, description="Most restarts after failures (OnFailure).")
    backoff_seconds: int = Field(
        30, ge=0, description="Wait before the first restart; doubled for each further one, at most 600 s.")


class RolloverSpec(Model):
    """Walltime rollover: a successor job takes over before the current one reaches its time limit."""

    enabled: bool | None = Field(
        None, description="Roll over at the time limit; default: on for long-running recipes, off for finite ones.")
    lead_minutes: int = Field(
        10, ge=1, description="Submit the successor this long before the current job's end (queued like any job).")
    drain_seconds: int = Field(
        30, ge=0, description="After the switch, the old job keeps serving requests already sent to it this long "
        "before it is cancelled.")
    warn_minutes: int = Field(
        15, ge=0, description="The WalltimeExpiring condition warns this long before the end when no successor is "
        "healthy yet.")


class UpdateStrategy(str, Enum):
    rollover = "Rollover"
    replace = "Replace"


class AIServiceSpec(Model):
    """An AI service to run on a Slurm cluster, made from a recipe."""

    recipe: str = Field(
        ..., min_length=1, description="Recipe path in the catalog, e.g. inference/vllm or embeddings/minilm."
    )
    env: EnvMap = Field(
        default_factory=dict,
        description="Environment variables for the service process; values reach it byte for byte.",
    )
    secret_env: dict[Annotated[str, Field(pattern=ENV_NAME_PATTERN)], SecretEnvRef] = Field(
        default_factory=dict,
        description="Environment variables whose values come from Secrets of the service's namespace (e.g. "
                    "HF_TOKEN), so that tokens never sit in a manifest; never shown in status, events or the API.",
    )
    resources: Resources = Field(default_factory=Resources, description="Overrides of the recipe's resources.")
    cluster: str = Field("default", description="Name of the SlurmCluster to run on.")
    partition: str | None = Field(None, description="Slurm partition; default from the SlurmCluster.")
    account: str | None = Field(None, description="Slurm account; default from the SlurmCluster.")
    qos: str | None = Field(None, description="Slurm QOS; default from the SlurmCluster.")
    restart: RestartSpec | None = Field(None, description="Restart policy after failures; unset: Never.")
    nodelist: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._\[\],-]+$",
        description="Run only on these nodes (Slurm's nodelist, e.g. gpu-a01 or gpu-a[01-04]).")


    stopped: bool | None = Field(
        None, description="Stop the service without deleting it: its job is cancelled and the resource stays "
        "(phase stopped, reason Stopped). Back to false starts it again (a new job). With onDemand, a request "
        "still starts it, and it stops again when idle.")
    on_demand: bool | None = Field(
        None, description="A request through the gateway (/v1/*) for a stopped or idle service starts it (a new "
        "job) and waits for it to be ready.")
    idle_timeout_minutes: int | None = Field(
        None, ge=1, description="Stop the running service (reason Idle) after this many minutes without a request "
        "through the gateway; unset = never.")
    start_timeout_seconds: int | None = Field(
        None, ge=1, le=3600, description="How long a gateway request for a service that is not ready yet waits "
        "before it gets 503 with Retry-After; default: the API's setting (120 s).")
    rollover: RolloverSpec | None = Field(None, description="Walltime rollover; unset: the defaults.")
    update_strategy: UpdateStrategy | None = Field(
        None, description="On a spec change: Rollover (the new job first, the old one cancelled once the new one "
        "is healthy) or Replace (cancel, then start). Default: Rollover for long-running recipes, else Replace.")


class Condition(Model):
    """A Kubernetes-style condition (metav1.Condition)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    type: str = Field(..., description="Condition type, e.g. Ready.")
    status: str = Field(..., description="True, False or Unknown.", pattern="^(True|False|Unknown)$")
    reason: str = Field("", description="One CamelCase word saying why.")
    message: str = Field("", description="What happened, in words.")
    last_transition_time: str | None = Field(None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="The spec generation this condition is about.")


class Attempt(Model):
    """One Slurm job of the service."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    number: int = Field(..., ge=1, description="1 for the service's first job, counting on (logs?attempt=N).")
    job_id: str = Field(..., description="Slurm job id.")
    cluster: str | None = Field(None, description="The SlurmCluster the job ran on.")
    started_by: str | None = Field(None, description="Why the job was submitted: Created, SpecChanged, Restart, "
                                   "Requeue, Rollover.")
    node: str | None = Field(None, description="Node the job ran on.")
    start_time: str | None = Field(None, description="When the job started (RFC 3339).")
    end_time: str | None = Field(None, description="When the job ended (RFC 3339).")
    end_state: str | None = Field(None, description="Slurm's end state (COMPLETED, FAILED, TIMEOUT, ...).")
    exit_code: int | None = Field(None, description="The job's exit code (128 + N for signal N).")
    reason: str | None = Field(None, description="Why it ended: a failure reason, or Completed, RolledOver, "
                               "Replaced, Stopped.")


class FailureInfo(Model):
    """The last failure, in KServe's lastFailureInfo shape plus the job and its last log lines."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    reason: str = Field(..., description="OutOfMemory, CudaOutOfMemory, Timeout, NodeFail, Preempted, "
                        "ImagePullFailed, StartupTimeout, ExitCode, Cancelled or JobLost.")
    message: str = Field("", description="What happened, in Slurm's or the log's words.")
    exit_code: int | None = Field(None, description="The job's exit code (128 + N for signal N).")
    time: str | None = Field(None, description="When the failure was seen (RFC 3339).")
    job_id: str | None = Field(None, description="The Slurm job that failed.")
    log_tail: str | None = Field(None, description="The job's last log lines.")


class TokenUsage(Model):
    """Requests and tokens counted by the gateway from the upstream's `usage` (also a stream's last chunk)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    requests: int = Field(0, ge=0, description="Requests forwarded.")
    prompt_tokens: int = Field(0, ge=0, description="Prompt tokens the upstream reported.")
    completion_tokens: int = Field(0, ge=0, description="Completion tokens the upstream reported.")
class Successor(Model):
    """The job that is to take over from the current one (walltime rollover or a spec change)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    job_id: str = Field(..., description="Slurm job id.")
    cluster: str | None = Field(None, description="The SlurmCluster it runs on.")
    reason: str = Field(..., description="Walltime or SpecChanged.")
    submitted_at: str | None = Field(None, description="When it was submitted (RFC 3339).")
    generation: int | None = Field(None, description="The spec generation it was made from.")


class DrainingJob(Model):
    """A job that was taken over: it finishes the requests already sent to it, then it is cancelled."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    job_id: str = Field(..., description="Slurm job id.")
    cluster: str | None = Field(None, description="The SlurmCluster it runs on.")
    until: str = Field(..., description="When it is cancelled (RFC 3339).")


class PreflightResult(Model):
    """What a dry run found: whether the job would run, in Slurm's words, and the job it would submit."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    ok: bool = Field(..., description="Whether the job would be accepted and could run.")
    problems: list[str] = Field(default_factory=list, description="Why not, in Slurm's words.")
    notes: list[str] = Field(default_factory=list, description="What could not be checked, and why.")
    script: str = Field("", description="The batch script that would be submitted.")
    partition: str | None = Field(None, description="Slurm partition.")
    account: str | None = Field(None, description="Slurm account.")
    qos: str | None = Field(None, description="Slurm QOS.")
    cpus_per_task: int | None = Field(None, description="CPUs per task.")
    memory_per_node_mb: int | None = Field(None, description="Memory per node in MB.")
    gpus_per_node: int | None = Field(None, description="GPUs per node.")
    time_limit_minutes: int | None = Field(None, description="Time limit in minutes.")
    nodes: int | None = Field(None, description="Number of nodes.")
    environment: list[str] = Field(default_factory=list, description="The names of the job's environment (values "
                                   "are never shown).")
    slurm_estimate: str | None = Field(None, description="sbatch --test-only's answer, where the transport can run "
                                       "it (SSH).")
    expected_start: str | None = Field(None, description="Slurm's estimate of the start, as sbatch --test-only "
                                       "gives it (the cluster's local time).")
    checked_at: str | None = Field(None, description="When the check ran (RFC 3339).")


class AIServiceStatus(Model):
    """What the operator observed; written only by the operator."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    phase: Phase | None = Field(None, description="pending, building, starting, running, completed, failed or cancelled.")
    job_id: str | None = Field(None, description="Slurm job id.")
    node: str | None = Field(None, description="Node the job runs on.")
    endpoint: str | None = Field(None, description="URL of the running service.")
    slurm_state: str | None = Field(None, description="The job state as Slurm reports it.")
    message: str | None = Field(None, description="Why the service is in this phase (Slurm's reason, exit code, ...).")
    pending_reason: str | None = Field(
        None, description="While the job is queued: Slurm's pending reason (e.g. Resources, Priority, JobHeldAdmin).")
    expected_start: str | None = Field(
        None, description="While the job is queued: Slurm's estimate of its start (RFC 3339), when Slurm gives one.")
    observed_generation: int | None = Field(None, description="The spec generation the status describes.")
    attempts: list[Attempt] = Field(default_factory=list, description="The service's newest Slurm jobs, oldest first.")
    last_failure: FailureInfo | None = Field(None, description="The last failure of a job of the service.")
    restart_count: int | None = Field(None, description="Restarts after failures since the spec last changed.")
    next_attempt_time: str | None = Field(
        None, description="When the next attempt may start (RFC 3339): a restart after a failure, or another "
        "successor after one failed.")
    successor: Successor | None = Field(None, description="The job on its way to take over (rollover).")
    draining: list[DrainingJob] = Field(default_factory=list, description="Jobs taken over, serving their last "
                                        "requests before they are cancelled.")
    rollovers: int | None = Field(None, description="How many times a successor job took over.")
    preflight: PreflightResult | None = Field(
        None, description="The answer to the lifecycle.aifactory.io/dry-run annotation: would the job run (nothing is "
        "submitted while the annotation is there).")
    conditions: list[Condition] = Field(default_factory=list, description="Ready and the other conditions.")
    observed_action: str | None = Field(
        None, description="The last lifecycle.aifactory.io/action annotation (start, restart, evict) the operator "
        "acted on.")
    models: list[str] = Field(
        default_factory=list, description="The model ids the service serves (its /v1/models when it became ready); "
        "the gateway routes them to it.")
    last_request: str | None = Field(
        None, description="When the gateway last forwarded a request to the service (RFC 3339; recorded at most "
        "once a minute, or a quarter of the idle timeout when that is shorter).")
    usage: TokenUsage | None = Field(None, description="Requests and tokens the gateway forwarded to the service.")


class Runtime(str, Enum):
    apptainer = "apptainer"
    native = "native"


IMAGE_PATTERN = r"^((docker|oras)://[^\s]+|/[^\s]*\.sif)$"
# `{env:NAME}` in a command argument: the value of NAME in the job's environment, as one argument.
ENV_PLACEHOLDER = re.compile(r"\{env:([^}]*)\}")


class ContainerCommand(str, Enum):
    apptainer = "apptainer"
    singularity = "singularity"


class RecipeSetting(Model):
    """A named knob of a recipe (LMStack's config keys, the console's form): the environment variable it sets."""

    env: str = Field(..., pattern=ENV_NAME_PATTERN, description="The environment variable the setting sets.")
    description: str = Field("", description="What the setting does.")


class Recipe(Model):
    """A kind of AI service: what to run, how to reach it and what it needs by default."""

    name: str = Field(..., pattern=DNS_LABEL_PATTERN, description="Recipe name, unique within its category.")
    category: str = Field(..., pattern=DNS_LABEL_PATTERN, description="Category, e.g. inference or embeddings.")
    description: str = Field("", description="What the service is.")
    version: str = Field("1.0", description="Recipe version.")
    runtime: Runtime = Field(Runtime.apptainer, description="apptainer (a container) or native (a command on the node).")
    image: str | None = Field(
        None, pattern=IMAGE_PATTERN,
        description="Container image: docker://..., oras://... or an absolute .sif path (runtime apptainer).",
    )
    build: str | None = Field(
        None, min_length=1, description="Apptainer definition file text to build the image from (instead of image)."
    )
    command: list[str] = Field(
        default_factory=list,
        description="Command and arguments, each passed as one argument; {port}, {host} and {env:NAME} are "
                    "replaced. With runtime apptainer and no command, the image's runscript gets the args.",
    )
    args: list[str] = Field(
        default_factory=list, description="Further arguments after the command, with the same placeholders."
    )
    port: int | None = Field(
        None, ge=1, le=65535,
        description="Fixed port, for a service that cannot be told one; otherwise a free port is picked at run time.",
    )
    port_env: str | None = Field(
        None, pattern=ENV_NAME_PATTERN, description="Environment variable that tells the service its port."
    )
    host_env: str | None = Field(
        None, pattern=ENV_NAME_PATTERN, description="Environment variable that tells the service its bind address."
    )
    health_path: str = Field("/health", pattern=r"^/", description="HTTP path that answers 200 once the service is up.")
    startup_grace_seconds: int = Field(
        900, ge=1, description="How long start-up (image pull or build, model load) may take before the service fails."
    )
    environment: EnvMap = Field(default_factory=dict, description="Default environment; the service's env overrides it.")
    resources: Resources = Field(default_factory=Resources, description="Default resources.")
    binds: list[Annotated[str, Field(pattern=r"^[^,\s]+$")]] = Field(
        default_factory=list,
        description="Further Apptainer bind mounts (src[:dest[:opts]]); the model cache (/models) and the "
                    "workspace (/workspace) are always bound.",
    )
    workdir: str | None = Field(None, pattern=r"^/", description="Working directory inside the container (--pwd).")
    openai_api: bool = Field(False, description="Whether the service speaks the OpenAI HTTP API (/v1/models, ...).")
    settings: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], RecipeSetting] = Field(
        default_factory=dict,
        description="Named settings people may give (e.g. model, max_model_len), each setting one environment "
                    "variable; defaults come from `environment`.")
    model_setting: str | None = Field(
        None, description="The setting that names the model the service serves (LMStack's `model`).")
    long_running: bool = Field(
        True, description="Serves until stopped (an endpoint, a database): its services roll over at the time limit "
        "by default. false for finite work, which ends on its own.")

    @field_validator("command", "args")
    @classmethod
    def _env_placeholders_name_variables(cls, argv: list[str]) -> list[str]:
        for arg in argv:
            for name in ENV_PLACEHOLDER.findall(arg):
                if not re.fullmatch(ENV_NAME_PATTERN, name):
                    raise ValueError(f"{{env:{name}}}: {name!r} is not an environment variable name")
        return argv

    @model_validator(mode="after")
    def _model_setting_is_a_setting(self) -> "Recipe":
        if self.model_setting is not None and self.model_setting not in self.settings:
            raise ValueError(f"modelSetting: {self.model_setting!r} is not one of the recipe's settings")
        return self

    @model_validator(mode="after")
    def _runnable(self) -> "Recipe":
        if self.runtime is Runtime.native and not self.command:
            raise ValueError("command: a recipe with runtime native needs a command")
        if self.runtime is Runtime.apptainer and not (self.image or self.build):
            raise ValueError("image: a recipe with runtime apptainer needs an image or a build definition")
        if self.image and self.build:
            raise ValueError("build: give an image or a build definition, not both")
        return self

    @property
    def path(self) -> str:
        return f"{self.category}/{self.name}"

    def environment_for(self, settings: dict[str, object]) -> dict[str, str]:
        """The environment that gives these settings (by name); a name the recipe does not have is a ValueError.
        Values become text as a service reads them (true/false for booleans)."""
        unknown = sorted(set(settings) - set(self.settings))
        if unknown:
            known = ", ".join(self.settings) or "none"
            raise ValueError(f"{', '.join(unknown)}: not a setting of recipe {self.path} (its settings: {known})")
        return {self.settings[name].env: str(value).lower() if isinstance(value, bool) else str(value)
                for name, value in settings.items()}


class SecretKeyRef(Model):
    """A key of a Secret."""

    name: str = Field(..., description="Secret name.")
    namespace: str | None = Field(None, description="Secret namespace; default: the operator's namespace.")
    key: str = Field("token", description="Key in the Secret's data.")


class Transport(str, Enum):
    """How the operator reaches a Slurm cluster."""

    rest = "rest"
    ssh_tunnel = "ssh-tunnel"
    ssh_cli = "ssh-cli"


class SshKeyRef(SecretKeyRef):
    """A Secret key holding an SSH private key (OpenSSH or PEM format, without passphrase)."""

    key: str = Field("ssh-privatekey", description="Key in the Secret's data (kubernetes.io/ssh-auth uses ssh-privatekey).")


class KnownHostsRef(SecretKeyRef):
    """A Secret key holding known_hosts lines for the login node."""

    key: str = Field("known_hosts", description="Key in the Secret's data.")


class SshSpec(Model):
    """The login node to reach over SSH (transports ssh-tunnel and ssh-cli). Key authentication only."""

    host: str = Field(..., min_length=1, description="Login node host name or address, as reached from the operator.")
    port: int = Field(22, ge=1, le=65535, description="SSH port of the login node.")
    user: str = Field(..., min_length=1, description="User to log in as; Slurm jobs submitted over the CLI run as this user.")
    key_secret_ref: SshKeyRef = Field(..., description="Secret holding the private key to log in with.")
    known_hosts: str | None = Field(
        None, description='known_hosts lines with the login node\'s host key, e.g. "[login.example.org]:22 ssh-ed25519 '
        'AAAA...". Unknown or changed host keys are refused.'
    )
    known_hosts_secret_ref: KnownHostsRef | None = Field(
        None, description="Secret holding the known_hosts lines instead of knownHosts."
    )
    slurmrestd_socket: str | None = Field(
        None, description="Unix socket path of slurmrestd on the login node (ssh-tunnel); when unset, url is used."
    )


class MintSpec(Model):
    """Mint slurmrestd tokens with `scontrol token` over SSH and renew them before they expire."""

    lifespan_seconds: int = Field(1800, ge=60, description="Lifespan asked of `scontrol token lifespan=`.")
    renew_before_seconds: int = Field(300, ge=0, description="Mint a new token this long before the old one expires.")


class TokenSpec(Model):
    """Where the slurmrestd JWT comes from: a Secret, or minted over SSH."""

    secret_ref: SecretKeyRef | None = Field(None, description="Secret holding the JWT (re-read when slurmrestd answers 401).")
    mint: MintSpec | None = Field(None, description="Mint the JWT with `scontrol token` on the login node (needs ssh).")


class CliSpec(Model):
    """How Slurm's commands run on the login node (transport ssh-cli, and token minting)."""

    environment: dict[Annotated[str, Field(pattern=ENV_NAME_PATTERN)], str] = Field(
        default_factory=dict, description="Environment for sbatch/squeue/scancel/scontrol on the login node, e.g. SLURM_CONF."
    )
    command_prefix: str | None = Field(
        None, description='Shell text put before every Slurm command as given, e.g. ". /etc/profile.d/modules.sh && '
        'module load slurm &&". Trusted: written by the cluster admin.'
    )


class GpuType(Model):
    """What a GRES GPU type is: the model's name and memory, which Slurm does not know."""

    name: str = Field(..., min_length=1, description='The GPU model, e.g. "NVIDIA A100-SXM4-80GB".')
    memory: str | None = Field(None, pattern=MEMORY_PATTERN, description='Memory of one GPU, e.g. "80G".')


class StorageSpec(Model):
    """The cluster's shared storage for the model and dataset registries: one area per tenant,
    <path>/<namespace>/models and <path>/<namespace>/datasets."""

    path: str = Field(
        ..., pattern=r"^/", description="Absolute directory on the cluster's shared filesystem, seen alike by the "
        "login node (or this side, with localLogs) and the compute nodes.")
    max_upload_megabytes: int = Field(
        10240, ge=1, description="Largest model or dataset file an upload may bring (MiB); larger ones are refused "
        "with 413.")


class SlurmClusterSpec(Model):
    """How to reach one Slurm cluster and what its jobs get by default."""

    transport: Transport = Field(
        Transport.rest, description="rest: slurmrestd over HTTP(S); ssh-tunnel: slurmrestd through SSH to the login "
        "node; ssh-cli: sbatch/squeue/scancel over SSH."
    )
    url: str | None = Field(
        None, description="slurmrestd base URL, e.g. http://127.0.0.1:6820; with ssh-tunnel as seen from the login node. "
        "Needed by rest and ssh-tunnel (unless ssh.slurmrestdSocket)."
    )
    user: str = Field("root", description="Slurm user the jobs run as (X-SLURM-USER-NAME).")
    token_secret_ref: SecretKeyRef | None = Field(None, description="Secret holding the slurmrestd JWT (same as token.secretRef).")
    token: TokenSpec | None = Field(None, description="Where the slurmrestd JWT comes from (rest, ssh-tunnel).")
    ssh: SshSpec | None = Field(None, description="The login node (ssh-tunnel, ssh-cli, token minting).")
    cli: CliSpec = Field(default_factory=CliSpec, description="Slurm commands on the login node (ssh-cli, token minting).")
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
    container_command: ContainerCommand = Field(
        ContainerCommand.apptainer,
        description="The container runtime's command on the compute nodes: apptainer, or singularity where a site "
        "has SingularityCE instead.",
    )
    local_logs: bool = Field(
        False, description="Job output files are readable on this side's filesystem (shared filesystem, local stack)."
    )
    poll_interval_seconds: float = Field(5.0, gt=0, description="How often the one poller of this cluster asks Slurm.")
    node_poll_interval_seconds: float = Field(
        30.0, gt=0, description="How often the cluster's nodes are read (one request for all nodes), at most, in "
        "each process that shows them; not at all while nobody looks.")
    gpu_types: dict[str, GpuType] = Field(
        default_factory=dict,
        description='GRES GPU types of the nodes (the "a100" of gpu:a100:4) and the model name and memory each '
        "stands for; a type not listed is shown by its GRES name, without memory.")
    storage: StorageSpec | None = Field(
        None, description="Shared storage of the model and dataset registries (training runs need it).")

    @model_validator(mode="after")
    def _transport_needs(self) -> "SlurmClusterSpec":
        if self.transport is Transport.rest and not self.url:
            raise ValueError("transport rest needs url")
        if self.transport in (Transport.ssh_tunnel, Transport.ssh_cli) and self.ssh is None:
            raise ValueError(f"transport {self.transport.value} needs ssh")
        if self.transport is Transport.ssh_tunnel and not (self.url or self.ssh.slurmrestd_socket):
            raise ValueError("transport ssh-tunnel needs url (as seen from the login node) or ssh.slurmrestdSocket")
        if self.ssh is not None and not (self.ssh.known_hosts or self.ssh.known_hosts_secret_ref):
            raise ValueError("ssh needs knownHosts or knownHostsSecretRef: the login node's host key must be known")
        if self.token and self.token.mint and self.ssh is None:
            raise ValueError("token.mint needs ssh: tokens are minted with scontrol on the login node")
        return self

    @property
    def token_ref(self) -> SecretKeyRef | None:
        return (self.token.secret_ref if self.token else None) or self.token_secret_ref


class NodesStatus(Model):
    """A summary of a cluster's nodes (one read of all nodes)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    total: int = Field(0, description="Nodes of the cluster.")
    up: int = Field(0, description="Nodes that can take a job (not down, drained, failing or powered off).")
    gpus: int = Field(0, description="GPUs of all nodes (GRES gpu).")
    gpus_free: int = Field(0, description="GPUs of the nodes that are up and not held by a job.")


class SlurmClusterStatus(Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: str | None = Field(None, description="The slurmrestd API version in use.")
    reachable: bool | None = Field(None, description="Whether the last poll reached slurmrestd.")
    message: str | None = Field(None, description="The last error, in the outside system's words.")
    nodes: NodesStatus | None = Field(None, description="The cluster's nodes and GPUs at the last read.")
    conditions: list[Condition] = Field(default_factory=list, description="Reachable and other conditions.")


class ServiceRecipeStatus(Model):
    """Whether the operator took the recipe into its catalog."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    path: str | None = Field(None, description="The recipe's path in the catalog (category/name).")
    accepted: bool | None = Field(None, description="Whether the recipe is in the operator's catalog.")
    message: str | None = Field(None, description="Why not, naming the field that is wrong.")


# ---- identity and tenancy -------------------------------------------------------------------------------------

class Role(str, Enum):
    """What a key may do. Each role includes the ones below it: admin > management > inference."""

    admin = "admin"
    management = "management"
    inference = "inference"

    def includes(self, other: "Role") -> bool:
        order = (Role.inference, Role.management, Role.admin)
        return order.index(self) >= order.index(other)


class TenantSlurm(Model):
    """Whom a tenant's jobs run as on Slurm."""

    account: str | None = Field(None, min_length=1, description="Slurm account every job of the tenant is charged to.")
    user: str | None = Field(
        None, min_length=1, description="Slurm user the tenant's jobs run as; needs a cluster token that may act "
        "for other users (SlurmUser or root). Default: the SlurmCluster's user.")
    partition: str | None = Field(None, min_length=1, description="Default partition (before the SlurmCluster's).")
    qos: str | None = Field(None, min_length=1, description="Default QOS (before the SlurmCluster's).")


class TenantQuotas(Model):
    """Limits of a tenant; unset = no limit of the tenant's own."""

    max_running_services: int | None = Field(
        None, ge=0, description="Most services of the tenant that may hold a Slurm job at once (queued or running).")
    max_training_sessions: int | None = Field(
        None, ge=0, description="Most training runs of the tenant that may hold a Slurm job at once; the others "
        "stay queued, oldest first, until one ends.")
    evict_least_recently_used: bool = Field(
        False, description="At the limit (the tenant's or the API's), a start first stops the tenant's least "
        "recently used idle on-demand service (reason Evicted) instead of answering 409.")


class TenantSpec(Model):
    """A tenant: one Kubernetes namespace, with the Slurm account its jobs run under and its quotas."""

    namespace: str | None = Field(
        None, pattern=DNS_LABEL_PATTERN, description="The tenant's namespace; default: the Tenant's name.")
    description: str = Field("", description="Who the tenant is.")
    slurm: TenantSlurm = Field(default_factory=TenantSlurm, description="Whom the tenant's jobs run as.")
    quotas: TenantQuotas = Field(default_factory=TenantQuotas, description="The tenant's limits.")


class TenantStatus(Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    namespace: str | None = Field(None, description="The namespace the tenant resolved to.")


KEY_HASH_PATTERN = r"^sha256:[0-9a-f]{64}$"
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$"


class ApiKeySpec(Model):
    """An API key of a tenant (the namespace it lives in). Only the key's hash is kept; the key is shown once."""

    display_name: str = Field(..., min_length=1, max_length=200, description="What the key is for.")
    role: Role = Field(..., description="admin, management or inference.")
    key_hash: str = Field(..., pattern=KEY_HASH_PATTERN, description="sha256 of the key; the key itself is never stored.")
    prefix: str = Field(..., min_length=4, max_length=40, description="The key's first characters, to recognise it.")
    owner: str | None = Field(None, description="Id of the User who owns the key.")
    allowed_models: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Models (service names or served model ids) the key may use; empty = all.")
    expires_at: str | None = Field(None, description="When the key stops working (RFC 3339); unset = never.")


class ApiKeyStatus(Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    last_used: str | None = Field(None, description="When the key last authenticated a request (to the minute).")
    usage: TokenUsage | None = Field(None, description="Requests and tokens the gateway forwarded with this key.")


class UserSpec(Model):
    """A person who owns API keys in a tenant (the namespace the User lives in)."""

    username: str = Field(..., pattern=USERNAME_PATTERN, description="Unique login name.")
    email: str | None = Field(None, min_length=1, max_length=320, description="E-mail address.")
    is_admin: bool = Field(False, description="Whether the user may hold admin keys.")
    password_hash: str | None = Field(
        None, description="Argon2 hash of the password (never the password itself).")


# ---- training ---------------------------------------------------------------------------------------------------

class Optimizer(str, Enum):
    adam = "adam"
    sgd = "sgd"
    rmsprop = "rmsprop"
    adamw = "adamw"


class LossFunction(str, Enum):
    cross_entropy = "cross_entropy"
    mse = "mse"
    mae = "mae"
    bce = "bce"


class Hyperparameters(Model):
    """How the model is trained; the ranges are seed 002's."""

    learning_rate: float = Field(..., ge=0.0001, le=1.0, description="Learning rate (0.0001 - 1.0).")
    batch_size: int = Field(..., ge=1, le=256, description="Batch size (1 - 256).")
    epochs: int = Field(..., ge=1, le=1000, description="Number of epochs (1 - 1000).")
    optimizer: Optimizer = Field(Optimizer.adam, description="adam, sgd, rmsprop or adamw.")
    loss_function: LossFunction = Field(
        LossFunction.cross_entropy, description="cross_entropy, mse, mae or bce.")


class TrainingState(str, Enum):
    """Where a training run is; the five states of seed 002."""

    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    stopped = "stopped"

    @property
    def finished(self) -> bool:
        return self in (TrainingState.completed, TrainingState.failed, TrainingState.stopped)


class TrainingRunSpec(Model):
    """A model to train on a Slurm cluster: an architecture on a dataset, with hyperparameters."""

    architecture: str = Field(
        ..., pattern=r"^[a-z0-9_]+$", description="mlp or cnn (built in), or a torchvision model name "
        "(e.g. resnet50) where the job's Python has torchvision.")
    dataset: str = Field(
        ..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="digits (built in: scikit-learn's 8x8 digits) or a dataset of the tenant's registry.")
    hyperparameters: Hyperparameters = Field(..., description="How to train.")
    model_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="Name of the trained model in the tenant's model registry; default "
        "<architecture>_<dataset>_<session id>.")
    recipe: str = Field("training/pytorch", min_length=1, description="The training recipe in the catalog.")
    resources: Resources = Field(default_factory=Resources, description="Overrides of the recipe's resources.")
    cluster: str = Field("default", description="Name of the SlurmCluster to run on.")
    partition: str | None = Field(None, description="Slurm partition; default from the tenant or the SlurmCluster.")
    account: str | None = Field(None, description="Slurm account; default from the tenant or the SlurmCluster.")
    qos: str | None = Field(None, description="Slurm QOS; default from the tenant or the SlurmCluster.")
    stop: bool = Field(
        False, description="Stop the run: its Slurm job is cancelled (or never submitted) and it reads stopped.")


class EpochMetrics(Model):
    """What one epoch measured."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    epoch: int = Field(..., ge=0, description="The epoch (from 1).")
    loss: float | None = Field(None, description="Training loss.")
    accuracy: float | None = Field(None, description="Training accuracy (0-1).")
    val_loss: float | None = Field(None, description="Validation loss.")
    val_accuracy: float | None = Field(None, description="Validation accuracy (0-1).")
    timestamp: str | None = Field(None, description="When the epoch ended (RFC 3339).")


class TrainingRunStatus(Model):
    """What the operator observed; written only by the operator."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    state: TrainingState | None = Field(None, description="queued, running, completed, failed or stopped.")
    current_epoch: int | None = Field(None, description="Epochs finished so far.")
    total_epochs: int | None = Field(None, description="Epochs asked for.")
    start_time: str | None = Field(None, description="When the Slurm job started (RFC 3339).")
    end_time: str | None = Field(None, description="When the run ended (RFC 3339).")
    message: str | None = Field(None, description="Why the run is in this state (Slurm's pending reason, the "
                                                  "tenant's limit, the error).")
    error_message: str | None = Field(None, description="What went wrong, when the run failed.")
    latest: EpochMetrics | None = Field(None, description="The metrics of the last finished epoch.")
    model: str | None = Field(None, description="The trained model's name in the tenant's model registry.")
    job_id: str | None = Field(None, description="Slurm job id.")
    node: str | None = Field(None, description="Node the job runs on.")
    slurm_state: str | None = Field(None, description="The job state as Slurm reports it.")
    observed_generation: int | None = Field(None, description="The spec generation the status describes.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready and the other conditions.")
