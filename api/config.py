"""The REST API's settings, read once from AIFACTORY_API_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFACTORY_API_")

    kubeconfig: str | None = Field(
        None, description="Kubeconfig file; default: KUBECONFIG, then the in-cluster service account, then ~/.kube.")
    namespace: str = Field(
        "default", description="The default tenant's namespace: where the trusted user works when auth is off.")
    operator_namespace: str = Field(
        "aifactory-system", description="Where the Secrets of SlurmClusters are looked up by default.")
    auth: bool = Field(
        True, description="Require an API key on every path but /, /health and the API docs. Off: every caller is "
        "one trusted admin of the default tenant (the original server's behaviour); a warning is logged at start.")
    bootstrap_admin_key: str | None = Field(
        None, repr=False, description="A key (aif_<12 hex>_<secret>) to accept as an admin key of the default tenant: "
        "its hash is stored as an ApiKey at start when missing (the Helm chart passes it from a Secret).")
    auth_failures_per_minute: int = Field(
        20, ge=1, description="Failed authentications one client may make per minute before it gets 429.")
    session_hours: float = Field(12.0, gt=0, description="Lifetime of the key POST /api/auth/login hands out.")
    prompt_timeout: float = Field(30.0, gt=0, description="Seconds a prompt may take at the service.")
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to a service's endpoint.")
    retry_after_seconds: int = Field(10, ge=1, description="Retry-After of a 503 while a service starts.")
    start_timeout_seconds: int = Field(
        120, ge=0, le=3600, description="How long a gateway request for a service that is not ready yet waits for it "
        "(a service's spec.startTimeoutSeconds overrides it); then 503 with Retry-After.")
    max_running_services: int | None = Field(
        None, ge=0, description="Most services of all tenants that may hold a Slurm job at once; a start over it "
        "answers 409 (or evicts, for tenants with evictLeastRecentlyUsed). Unset: no such limit.")
    llamactl_default_recipe: str = Field(
        "inference/llama-cpp", description="The recipe of a llamactl instance created without recipe or backend_type.")
    gateway_timeout: float = Field(
        600.0, gt=0, description="Seconds a request forwarded by the gateway (/v1/*, llamactl's proxy) may wait "
        "between two pieces of the service's answer.")
    sync_timeout: float = Field(10.0, gt=0, description="How long a request waits for the first list of resources.")
    training_cluster: str = Field(
        "default", description="The SlurmCluster that seed 002's training sessions run on and whose storage holds "
        "the model and dataset registries.")
    recipe_retry_seconds: float = Field(
        30.0, gt=0, description="How often to look again for an aifactory CRD while it is not installed.")
