"""Seed 004's face: LMStack's deployments (AIServices), workers (Slurm nodes) and their containers (Slurm jobs).

API keys and users in LMStack's shape are the identity face's (/api/api-keys, /api/users)."""

from aifactory.api.lmstack import deployments, workers
from aifactory.api.lmstack.errors import render_error

ROUTERS = (deployments.router, workers.router)
PREFIXES = ("/api/deployments", "/api/workers")

__all__ = ["PREFIXES", "ROUTERS", "render_error"]
