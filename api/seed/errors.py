"""How seed 000/001's API says what went wrong: `{"detail": ...}`, and its two richer bodies (a service that is
not available, an upstream error); plus the `responses=` entries of its OpenAPI document."""

from __future__ import annotations

from fastapi.responses import JSONResponse, Response

from aifactory.api.errors import ApiError, ServiceNotAvailable, UpstreamError, render_detail
from aifactory.api.seed.schemas import ErrorDetail, ServiceUnavailableBody, UpstreamErrorBody

STARTING_MESSAGE = "The service may still be starting up. Please wait and try again."
ENDED_MESSAGE = "The service has ended; create a new one."

AUTH = {401: {"model": ErrorDetail, "description": "No API key, or an unknown, revoked or expired one"},
        403: {"model": ErrorDetail, "description": "The key's role does not allow this path"},
        429: {"model": ErrorDetail, "description": "Too many failed authentications; see Retry-After"}}
BAD_BODY = {400: {"model": ErrorDetail, "description": "The body is not JSON, or Kubernetes refused what it asks "
                                                          "for (its words)"}}
NOT_FOUND = {404: {"model": ErrorDetail, "description": "No such service or recipe"}}
KUBE_DOWN = {503: {"model": ErrorDetail, "description": "The Kubernetes API is not reachable"}}
SLURM_ERRORS = {502: {"model": ErrorDetail, "description": "Slurm refused, in Slurm's words"},
                503: {"model": ErrorDetail, "description": "Kubernetes or Slurm not reachable"}}
UPSTREAM = {
    502: {"model": UpstreamErrorBody, "description": "The service answered with an error (its status and words)"},
    503: {"model": ServiceUnavailableBody, "description": "The service is not running (yet); see Retry-After"},
    504: {"model": UpstreamErrorBody, "description": "The service did not answer in time"},
}


def render_error(error: ApiError) -> Response:
    cause = error.cause
    if isinstance(cause, ServiceNotAvailable):
        body = ServiceUnavailableBody(message=STARTING_MESSAGE if cause.retry_after else ENDED_MESSAGE,
                                      details=cause.details)
        return JSONResponse(body.model_dump(), status_code=503, headers=error.headers or None)
    if isinstance(cause, UpstreamError):
        body = UpstreamErrorBody(message=str(cause), upstream_status=cause.status if error.status != 504 else None)
        return JSONResponse(body.model_dump(), status_code=error.status)
    return render_detail(error)
