"""Seed 002's face: the Server Management API of a PyTorch training server (training sessions and their queue,
metrics, history and logs, system info, model and dataset registries) over the training and registry verbs."""

from aifactory.api.errors import render_detail as render_error
from aifactory.api.training import registry, sessions, system

ROUTERS = (sessions.router, registry.models, registry.datasets, system.router)
PREFIXES = ("/api/v1/training", "/api/v1/models", "/api/v1/datasets", "/api/v1/system")

__all__ = ["PREFIXES", "ROUTERS", "render_error"]
