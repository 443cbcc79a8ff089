"""/api/v1/services: every call is a create, read or delete of an AIService resource of the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status
from pydantic import TypeAdapter

from aifactory.api.deps import Caller, Management, StateDep, StoreDep
from aifactory.api.seed.errors import AUTH, BAD_BODY, KUBE_DOWN, NOT_FOUND, SLURM_ERRORS
from aifactory.api.seed.schemas import (
    LogsResponse,
    PreflightResponse,
    ServiceRequest,
    ServiceResponse,
    ServiceStatusResponse,
    StopResponse,
)
from aifactory.models import Resources

router = APIRouter(prefix="/api/v1/services", tags=["services"], dependencies=[Management], responses={**AUTH})


async def get_service(state: StateDep, store: StoreDep, caller: Caller,
                      service_id: Annotated[str, Path(title="Service Id")]) -> dict:
    return state.services.get(caller, service_id)


ServiceDep = Annotated[dict, Depends(get_service)]


@router.get("", response_model=list[ServiceResponse], summary="List Services", responses={**KUBE_DOWN})
async def list_services(state: StateDep, store: StoreDep, caller: Caller) -> Response:
    """List the services of the caller's tenant (an admin's: every tenant's), oldest first."""
    # Rendered once per change of the watch cache: a thousand services are 1,000 models to build and check.
    body = state.services.listing(caller, lambda objects: _SERVICE_LIST.dump_json(
        [ServiceResponse.of(obj, caller.tenant == obj["metadata"].get("namespace")) for obj in objects]))
    return Response(body, media_type="application/json")


_SERVICE_LIST = TypeAdapter(list[ServiceResponse])


@router.post("", response_model=ServiceResponse, status_code=status.HTTP_201_CREATED, summary="Create Service",
             responses={200: {"model": PreflightResponse, "description": "dry_run=true: whether the service "
                              "would run, the job script and any problem in Slurm's words; nothing is created"},
                        **BAD_BODY, **NOT_FOUND, **KUBE_DOWN, **SLURM_ERRORS})
async def create_service(request: ServiceRequest, state: StateDep, store: StoreDep, caller: Caller,
                         dry_run: Annotated[bool, Query(description="Check the request against Kubernetes and the "
                                                        "Slurm cluster without creating anything")] = False
                         ) -> ServiceResponse | Response:
    """Create and start a new service: an AIService that the operator runs as a Slurm job."""
    config = request.config
    resources = Resources(**config.resources.model_dump())
    if dry_run:
        answer = await state.services.preflight(caller, request.recipe_name, env=config.environment,
                                                resources=resources, **config.spec_fields())
        body = PreflightResponse.model_validate(answer.model_dump())
        return Response(body.model_dump_json(), media_type="application/json", status_code=200)
    created = await state.services.create(caller, request.recipe_name, env=config.environment,
                                          resources=resources, **config.spec_fields())
    return ServiceResponse.of(created)


@router.get("/{service_id}", response_model=ServiceResponse, summary="Get Service",
            responses={**NOT_FOUND, **KUBE_DOWN})
async def get_service_details(service: ServiceDep, caller: Caller) -> ServiceResponse:
    """Get details of a specific service, by id or by its Slurm job id."""
    return ServiceResponse.of(service, caller.tenant == service["metadata"].get("namespace"))


@router.delete("/{service_id}", response_model=StopResponse, summary="Stop Service",
               responses={**NOT_FOUND, **KUBE_DOWN})
async def stop_service(service: ServiceDep, state: StateDep, caller: Caller) -> StopResponse:
    """Stop a service: delete its AIService; the operator cancels the Slurm job before the resource goes."""
    await state.services.delete(caller, service)
    return StopResponse(message="Service stopped successfully", job_id=(service.get("status") or {}).get("jobId"))


@router.get("/{service_id}/status", response_model=ServiceStatusResponse, summary="Get Service Status",
            responses={**NOT_FOUND, **KUBE_DOWN})
async def get_service_status(service: ServiceDep) -> ServiceStatusResponse:
    """Get current status of a service."""
    return ServiceStatusResponse.of(service)


@router.get("/{service_id}/logs", response_model=LogsResponse, summary="Get Service Logs",
            responses={**NOT_FOUND, **SLURM_ERRORS})
async def get_service_logs(service: ServiceDep, state: StateDep, caller: Caller,
                           lines: Annotated[int, Query(ge=1, le=10_000, description="Last lines of each file")] = 200,
                           attempt: Annotated[int | None, Query(
                               ge=1, description="The service's Nth Slurm job (status attempts) instead of the "
                               "current one")] = None,
                           ) -> LogsResponse:
    """Get the tail of the service's Slurm job output (stdout and stderr), read through the Slurm bridge."""
    tail = await state.services.logs(caller, service, lines, attempt)
    return LogsResponse(logs=tail.text, job_id=tail.job_id, attempt=tail.attempt)
