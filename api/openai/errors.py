"""How OpenAI's face says what went wrong: OpenAI's error object, `{"error": {message, type, param, code}}`.

A 503 also says where the service is (`aifactory`: phase, Slurm's pending reason, expected start), so that a client
that waits knows what for; Retry-After comes as a header.
"""

from __future__ import annotations

from aifactory.api.errors import ApiError, ServiceNotAvailable
from fastapi.responses import JSONResponse, Response

# The core's words -> OpenAI's error types.
TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error",
         422: "invalid_request_error", 429: "rate_limit_error", 502: "upstream_error", 503: "service_unavailable",
         504: "timeout_error"}
CODES = {401: "invalid_api_key", 404: "model_not_found", 409: "limit_reached", 503: "service_not_ready"}


def render_error(error: ApiError) -> Response:
    body = {"message": error.message, "type": TYPES.get(error.status, "server_error"), "param": None,
            "code": CODES.get(error.status, error.code)}
    if error.status == 400 and "model" in error.message:
        body["param"] = "model"
    if isinstance(error.cause, ServiceNotAvailable) and error.cause.status:
        body["aifactory"] = error.cause.status
    return JSONResponse({"error": body}, status_code=error.status, headers=error.headers or None)
