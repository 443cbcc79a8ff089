"""OpenAI's face: one endpoint for every model. /v1/models lists the services a key may use; /v1/chat/completions,
/v1/completions, /v1/embeddings, /v1/rerank and /v1/reranking are routed by the body's `model` to the service of
that name (or serving that model id), started on demand and waited for, and answered as the service answers."""

from aifactory.api.openai.errors import render_error
from aifactory.api.openai.routes import FORWARDED_PATHS, install, router

__all__ = ["FORWARDED_PATHS", "install", "render_error", "router"]
