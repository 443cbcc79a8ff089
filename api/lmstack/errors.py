"""How LMStack says what went wrong: FastAPI's `{"detail": ...}`; a deployment pinned to a node that cannot take
jobs is 503 "Worker offline", its words (the node's state and Slurm's reason go to the log line, not the body)."""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse, Response

from aifactory.api.errors import ApiError, render_detail
from aifactory.api.lmstack.schemas import Detail
from aifactory.api.nodes import NodeOffline

log = logging.getLogger(__name__)

WORKER_OFFLINE = "Worker offline"

ERRORS = {code: {"model": Detail, "description": text} for code, text in {
    400: "Bad Request - Invalid parameters (an unknown backend, a config key the backend does not have)",
    401: "Unauthorized - Invalid or missing API key",
    403: "Forbidden - Insufficient permissions",
    404: "Not Found - Resource doesn't exist",
    409: "Conflict - Resource already exists",
    503: "Service Unavailable - Worker offline, or Kubernetes or Slurm not reachable",
}.items()}


def render_error(error: ApiError) -> Response:
    if isinstance(error.cause, NodeOffline):
        log.info("deployment refused: %s", error.cause.details)
        return JSONResponse({"detail": WORKER_OFFLINE}, status_code=503)
    return render_detail(error)
