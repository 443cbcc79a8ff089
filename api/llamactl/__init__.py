"""llamactl's face (seed 003): named instances with start, stop, restart, logs and a proxy, over the service verbs.

An instance is an AIService of the caller's tenant; /api/v1/instances needs a management key (OpenAI's /v1/* face
serves its inference). Errors are `{"error": "..."}`.
"""

from aifactory.api.llamactl.errors import render_error
from aifactory.api.llamactl.routes import PREFIXES, install, router, system

__all__ = ["PREFIXES", "install", "render_error", "router", "system"]
