"""The REST API's settings, read once from AIFACTORY_API_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFACTORY_API_")

    kubeconfig: str | None = Field(
        None, description="Kubeconfig file; default: KUBECONFIG, then the in-cluster service account, then ~/.kube.")
    namespace: str = Field("default", description="Namespace whose AIServices the API lists and creates.")
    operator_namespace: str = Field(
        "aifactory-system", description="Where the Secrets of SlurmClusters are looked up by default.")
    prompt_timeout: float = Field(30.0, gt=0, description="Seconds a prompt may take at the service.")
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to a service's endpoint.")
    retry_after_seconds: int = Field(10, ge=1, description="Retry-After of a 503 while a service starts.")
    sync_timeout: float = Field(10.0, gt=0, description="How long a request waits for the first list of AIServices.")
    recipe_retry_seconds: float = Field(
        30.0, gt=0, description="How often to look again for the ServiceRecipe CRD while it is not installed.")
