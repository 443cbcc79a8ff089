"""Every error the API answers is JSON in the outside system's words; none carries a stack trace or a secret."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from aifactory.api.clusters import ClusterNotFound
from aifactory.api.kube import kube_message
from aifactory.api.prompting import UpstreamError
from aifactory.api.schemas import ErrorDetail, ServiceUnavailableBody, UpstreamErrorBody
from aifactory.api.store import KubeUnavailable
from aifactory.recipes import RecipeNotFound
from aifactory.slurm.errors import SlurmError, SlurmUnreachable

log = logging.getLogger(__name__)

STARTING_MESSAGE = "The service may still be starting up. Please wait and try again."
ENDED_MESSAGE = "The service has ended; create a new one."


class ServiceNotAvailable(Exception):
    """The service cannot take requests: not running (yet), or its endpoint refuses connections."""

    def __init__(self, details: str, *, retry_after: int | None):
        super().__init__(details)
        self.details = details
        self.retry_after = retry_after


# `responses=` entries for the OpenAPI document.
BAD_BODY = {400: {"model": ErrorDetail, "description": "The body is not JSON"}}
NOT_FOUND = {404: {"model": ErrorDetail, "description": "No such service or recipe"}}
KUBE_DOWN = {503: {"model": ErrorDetail, "description": "The Kubernetes API is not reachable"}}
SLURM_ERRORS = {502: {"model": ErrorDetail, "description": "Slurm refused, in Slurm's words"},
                503: {"model": ErrorDetail, "description": "Kubernetes or Slurm not reachable"}}
UPSTREAM = {
    502: {"model": UpstreamErrorBody, "description": "The service answered with an error (its status and words)"},
    503: {"model": ServiceUnavailableBody, "description": "The service is not running (yet); see Retry-After"},
    504: {"model": UpstreamErrorBody, "description": "The service did not answer in time"},
}


def _json(status: int, body: dict, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's shape, without `input`: it would echo the request's values (environment values may be secret).
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return _json(422, {"detail": errors})

    @app.exception_handler(RecipeNotFound)
    async def recipe_not_found(request: Request, exc: RecipeNotFound) -> JSONResponse:
        return _json(404, {"detail": str(exc)})

    @app.exception_handler(ServiceNotAvailable)
    async def not_available(request: Request, exc: ServiceNotAvailable) -> JSONResponse:
        body = ServiceUnavailableBody(message=STARTING_MESSAGE if exc.retry_after else ENDED_MESSAGE,
                                      details=exc.details)
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return _json(503, body.model_dump(), headers)

    @app.exception_handler(UpstreamError)
    async def upstream_error(request: Request, exc: UpstreamError) -> JSONResponse:
        status = 504 if exc.status == 504 else 502
        body = UpstreamErrorBody(message=str(exc), upstream_status=exc.status if exc.status != 504 else None)
        return _json(status, body.model_dump())

    @app.exception_handler(KubeUnavailable)
    async def kube_unavailable(request: Request, exc: KubeUnavailable) -> JSONResponse:
        return _json(503, {"detail": str(exc)})

    @app.exception_handler(ClusterNotFound)
    async def cluster_not_found(request: Request, exc: ClusterNotFound) -> JSONResponse:
        return _json(503, {"detail": str(exc)})

    @app.exception_handler(ApiException)
    async def kube_error(request: Request, exc: ApiException) -> JSONResponse:
        status = exc.status if isinstance(exc.status, int) and 400 <= exc.status < 500 else 502
        return _json(status, {"detail": f"Kubernetes: {kube_message(exc)}"})

    @app.exception_handler(Urllib3Error)
    async def kube_unreachable(request: Request, exc: Urllib3Error) -> JSONResponse:
        log.warning("Kubernetes API not reachable: %s", exc)
        return _json(503, {"detail": "Kubernetes API not reachable"})

    @app.exception_handler(SlurmError)
    async def slurm_error(request: Request, exc: SlurmError) -> JSONResponse:
        return _json(503 if isinstance(exc, SlurmUnreachable) else 502, {"detail": f"Slurm: {exc}"})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _json(500, {"detail": "Internal server error"})
