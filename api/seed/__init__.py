"""Seed 000/001's face: the AI Factory Server API (services, recipes, vLLM prompts) over the service verbs."""

from aifactory.api.seed import recipes, root, services, vllm
from aifactory.api.seed.errors import render_error

ROUTERS = (root.router, services.router, recipes.router, vllm.router)

__all__ = ["ROUTERS", "render_error"]
