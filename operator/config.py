"""The operator's settings, read once from AIFACTORY_* environment variables and validated at start-up."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFACTORY_")

    namespace: str = Field("aifactory-system", description="Where Secrets of SlurmClusters are looked up by default.")
    watch_namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch; empty = all.")
    observe_interval: float = Field(1.0, gt=0, description="Seconds between two looks at one service.")
    probe_timeout: float = Field(2.0, gt=0, description="Timeout of one health probe.")
    liveness_port: int = Field(8080, description="Port of kopf's liveness endpoint (/healthz).")


config = OperatorConfig()
