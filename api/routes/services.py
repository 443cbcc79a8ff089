"""/api/v1/services: every call is a create, read or delete of an AIService resource."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import TypeAdapter
from kubernetes.client.rest import ApiException

from aifactory.api.aiservices import aiservice_manifest, service_name
from aifactory.api.deps import ServiceDep, StateDep, StoreDep
from aifactory.api.errors import BAD_BODY, KUBE_DOWN, NOT_FOUND, SLURM_ERRORS
from aifactory.api.schemas import (
    LogsResponse,
    ServiceRequest,
    ServiceResponse,
    ServiceStatusResponse,
    StopResponse,
)
from aifactory.slurm.jobs import SlurmJob

router = APIRouter(prefix="/api/v1/services", tags=["services"])

NAME_ATTEMPTS = 3  # a clash of the random suffix is rare; a second one rarer still


@router.get("", response_model=list[ServiceResponse], summary="List Services", responses={**KUBE_DOWN})
async def list_services(store: StoreDep) -> Response:
    """List all services (the AIServices of the API's namespace), oldest first."""
    # Rendered once per change of the watch cache: a thousand services are 1,000 models to build and check.
    body = store.services_listing(
        lambda objects: _SERVICE_LIST.dump_json([ServiceResponse.of(obj) for obj in objects]))
    return Response(body, media_type="application/json")


_SERVICE_LIST = TypeAdapter(list[ServiceResponse])


@router.post("", response_model=ServiceResponse, status_code=status.HTTP_201_CREATED, summary="Create Service",
             responses={**BAD_BODY, **NOT_FOUND, **KUBE_DOWN})
async def create_service(request: ServiceRequest, store: StoreDep) -> ServiceResponse:
    """Create and start a new service: an AIService that the operator runs as a Slurm job."""
    recipe = store.catalog().get(request.recipe_name)
    for attempt in range(NAME_ATTEMPTS):
        manifest = aiservice_manifest(service_name(recipe), store.namespace, recipe, request.config)
        try:
            created = await store.create(manifest)
        except ApiException as exc:
            if exc.status == 409 and attempt + 1 < NAME_ATTEMPTS:
                continue
            raise
        return ServiceResponse.of(created)
    raise AssertionError("unreachable")


@router.get("/{service_id}", response_model=ServiceResponse, summary="Get Service",
            responses={**NOT_FOUND, **KUBE_DOWN})
async def get_service(service: ServiceDep) -> ServiceResponse:
    """Get details of a specific service, by id or by its Slurm job id."""
    return ServiceResponse.of(service)


@router.delete("/{service_id}", response_model=StopResponse, summary="Stop Service",
               responses={**NOT_FOUND, **KUBE_DOWN})
async def stop_service(service: ServiceDep, store: StoreDep) -> StopResponse:
    """Stop a service: delete its AIService; the operator cancels the Slurm job before the resource goes."""
    meta = service["metadata"]
    try:
        await store.delete(meta["name"], meta["namespace"])
    except ApiException as exc:
        if exc.status != 404:
            raise
    return StopResponse(message="Service stopped successfully", job_id=(service.get("status") or {}).get("jobId"))


@router.get("/{service_id}/status", response_model=ServiceStatusResponse, summary="Get Service Status",
            responses={**NOT_FOUND, **KUBE_DOWN})
async def get_service_status(service: ServiceDep) -> ServiceStatusResponse:
    """Get current status of a service."""
    return ServiceStatusResponse.of(service)


@router.get("/{service_id}/logs", response_model=LogsResponse, summary="Get Service Logs",
            responses={**NOT_FOUND, **SLURM_ERRORS})
async def get_service_logs(service: ServiceDep, state: StateDep,
                           lines: Annotated[int, Query(ge=1, le=100_000, description="Last lines of each file")] = 200
                           ) -> LogsResponse:
    """Get the tail of the service's Slurm job output (stdout and stderr), read through the Slurm bridge."""
    status_ = service.get("status") or {}
    job_id = status_.get("jobId")
    if not job_id:
        why = f" ({status_['message']})" if status_.get("message") else ""
        return LogsResponse(logs=f"No logs yet: the service has no Slurm job yet{why}.")
    spec, bridge = await state.clusters.get((service.get("spec") or {}).get("cluster") or "default")
    # A job Slurm has forgotten still has its files, under the names aifactory gives them.
    job = await bridge.job(job_id) or SlurmJob(job_id=job_id, working_directory=spec.working_directory)
    text = await bridge.log_tail(job, lines)
    if text is None:
        if not spec.local_logs and spec.ssh is None:
            text = (f"The output of Slurm job {job_id} is not readable from the API server "
                    "(its SlurmCluster has neither localLogs nor ssh).")
        else:
            text = f"No logs yet: Slurm job {job_id} has not written any output."
    return LogsResponse(logs=text, job_id=job_id)
