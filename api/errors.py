"""Errors of the API's core, and how each face renders them.

The verbs below the faces raise the core's exceptions (or the outside systems': Kubernetes, Slurm, pydantic);
`install` turns every one into an `ApiError` (status, message in the outside system's words, headers) and hands
it to the renderer of the face the request came through, found by path prefix: seed 000's `{"detail"}`, seed
003's `{"error"}`, OpenAI's error object, ... None carries a stack trace or a secret.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from kubernetes.client.rest import ApiException
from starlette.exceptions import HTTPException as StarletteHTTPException
from urllib3.exceptions import HTTPError as Urllib3Error

from aifactory.api.identity.principal import Forbidden, Throttled, Unauthorized
from aifactory.api.kube import kube_message
from aifactory.clusters import ClusterNotReady
from aifactory.recipes import RecipeNotFound
from aifactory.slurm.errors import SlurmError, SlurmUnreachable

log = logging.getLogger(__name__)


class NotFound(LookupError):
    """No such thing, or not one the caller's tenant may see (404 either way)."""


class Conflict(Exception):
    """The request contradicts what exists (409): a name taken, a limit reached."""


class BadRequest(ValueError):
    """The request cannot be done as asked (400)."""


class KubeUnavailable(Exception):
    """The Kubernetes API has not answered the first list yet."""


class ServiceNotAvailable(Exception):
    """The service cannot take requests: not running (yet), or its endpoint refuses connections."""

    def __init__(self, details: str, *, retry_after: int | None, status: dict | None = None):
        super().__init__(details)
        self.details = details
        self.retry_after = retry_after
        self.status = status or {}  # where the service is (phase, Slurm's pending reason, ...), for the body


class UpstreamError(Exception):
    """The service answered with an error, or not in time (504)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class UpstreamTimeout(UpstreamError):
    pass


@dataclass
class ApiError:
    """One error as any face may render it."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    code: str = "error"  # a short word: not_found, unauthorized, ...
    detail: Any = None  # a structured detail where one exists (validation errors)
    cause: Exception | None = None


Renderer = Callable[[ApiError], Response]

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="aifactory"'}


def as_api_error(exc: Exception) -> ApiError:
    """The core's and the outside systems' exceptions in one shape."""
    if isinstance(exc, ApiErrorException):
        return exc.error
    if isinstance(exc, Unauthorized):
        return ApiError(401, str(exc), dict(UNAUTHORIZED_HEADERS), "unauthorized", cause=exc)
    if isinstance(exc, Throttled):
        return ApiError(429, str(exc), {"Retry-After": str(exc.retry_after)}, "too_many_requests", cause=exc)
    if isinstance(exc, Forbidden):
        return ApiError(403, str(exc), code="forbidden", cause=exc)
    if isinstance(exc, (NotFound, RecipeNotFound)):
        return ApiError(404, str(exc), code="not_found", cause=exc)
    if isinstance(exc, Conflict):
        return ApiError(409, str(exc), code="conflict", cause=exc)
    if isinstance(exc, BadRequest):
        return ApiError(400, str(exc), code="bad_request", cause=exc)
    if isinstance(exc, RequestValidationError):
        # FastAPI's shape, without `input`: it would echo the request's values (environment values may be secret).
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        words = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return ApiError(422, words or "invalid request", code="invalid_request", detail=errors, cause=exc)
    if isinstance(exc, ServiceNotAvailable):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
        return ApiError(503, exc.details, headers, "service_unavailable", cause=exc)
    if isinstance(exc, UpstreamError):
        return ApiError(504 if isinstance(exc, UpstreamTimeout) else 502, str(exc), code="upstream_error",
                        cause=exc)
    if isinstance(exc, (KubeUnavailable, ClusterNotReady)):
        return ApiError(503, str(exc), code="unavailable", cause=exc)
    if isinstance(exc, ApiException):
        status = exc.status if isinstance(exc.status, int) and 400 <= exc.status < 500 else 502
        if status == 422:  # Kubernetes refused what the request would store: a bad request, in its words
            status = 400
        return ApiError(status, f"Kubernetes: {kube_message(exc)}", code="kubernetes_error", cause=exc)
    if isinstance(exc, Urllib3Error):
        log.warning("Kubernetes API not reachable: %s", exc)
        return ApiError(503, "Kubernetes API not reachable", code="unavailable", cause=exc)
    if isinstance(exc, SlurmError):
        return ApiError(503 if isinstance(exc, SlurmUnreachable) else 502, f"Slurm: {exc}", code="slurm_error",
                        cause=exc)
    if isinstance(exc, StarletteHTTPException):
        return ApiError(exc.status_code, str(exc.detail), dict(exc.headers or {}), cause=exc)
    return ApiError(500, "Internal server error", code="internal_error", cause=exc)


class ApiErrorException(Exception):
    """An ApiError raised as it is (a face that decided the exact status and words)."""

    def __init__(self, error: ApiError):
        super().__init__(error.message)
        self.error = error


def render_detail(error: ApiError) -> Response:
    """FastAPI's own shape, `{"detail": ...}`: seeds 000/001, 002 and 004 speak it."""
    body = {"detail": error.detail if error.detail is not None else error.message}
    return JSONResponse(body, status_code=error.status, headers=error.headers or None)


class Faces:
    """Which renderer answers the errors of which paths (longest prefix first); `render_detail` otherwise."""

    def __init__(self) -> None:
        self._renderers: list[tuple[str, Renderer]] = []

    def add(self, prefix: str, renderer: Renderer) -> None:
        self._renderers.append((prefix, renderer))
        self._renderers.sort(key=lambda item: -len(item[0]))

    def renderer_for(self, path: str) -> Renderer:
        return next((r for prefix, r in self._renderers if path.startswith(prefix)), render_detail)


def install(app: FastAPI, faces: Faces) -> None:
    async def handle(request: Request, exc: Exception) -> Response:
        error = as_api_error(exc)
        if error.status >= 500 and error.code == "internal_error":
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return faces.renderer_for(request.url.path)(error)

    # Each kind by name: a handler for Exception alone would answer through Starlette's server-error path,
    # which logs every 404 as a crash.
    for kind in (ApiErrorException, Unauthorized, Throttled, Forbidden, NotFound, RecipeNotFound, Conflict,
                 BadRequest, RequestValidationError, ServiceNotAvailable, UpstreamError, KubeUnavailable,
                 ClusterNotReady, ApiException, Urllib3Error, SlurmError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle)
