"""/api/v1/vllm: services whose recipe serves the OpenAI API; their models, and prompts to them (inference keys)."""

from __future__ import annotations

from fastapi import APIRouter

from aifactory.api.aiservices import availability
from aifactory.api.deps import Caller, Inference, SettingsDep, StateDep, StoreDep
from aifactory.api.errors import BadRequest, ServiceNotAvailable
from aifactory.api.config import ApiSettings
from aifactory.api.seed import prompting
from aifactory.api.seed.errors import AUTH, KUBE_DOWN, NOT_FOUND, UPSTREAM
from aifactory.api.seed.schemas import (
    ErrorDetail,
    ModelsResponse,
    PromptRequest,
    PromptResponse,
    ServiceResponse,
    VllmService,
    VllmServicesResponse,
)
from aifactory.api.store import Store
from aifactory.recipes import RecipeNotFound

router = APIRouter(prefix="/api/v1/vllm", tags=["vllm"], dependencies=[Inference], responses={**AUTH})

NOT_OPENAI = {400: {"model": ErrorDetail,
                    "description": "The body is not JSON, or the service's recipe does not serve the OpenAI API"}}


def _serves_openai(store: Store, obj: dict) -> bool:
    try:
        return store.catalog().get(str((obj.get("spec") or {}).get("recipe", ""))).openai_api
    except RecipeNotFound:
        return False


def _endpoint(store: Store, settings: ApiSettings, obj: dict) -> str:
    """The endpoint of a running OpenAI-speaking service, else the error the client gets."""
    if not _serves_openai(store, obj):
        recipe = (obj.get("spec") or {}).get("recipe")
        raise BadRequest(f"Service {obj['metadata']['name']} runs recipe {recipe}, "
                         "which does not serve the OpenAI API")
    endpoint, why, may_come_up = availability(obj)
    if endpoint is None:
        raise ServiceNotAvailable(why, retry_after=settings.retry_after_seconds if may_come_up else None)
    return endpoint


async def _upstream(call, settings: ApiSettings):
    try:
        return await call
    except prompting.ServiceStarting as exc:
        raise ServiceNotAvailable(str(exc), retry_after=settings.retry_after_seconds) from exc


@router.get("/services", response_model=VllmServicesResponse, summary="List Vllm Services",
            responses={**KUBE_DOWN})
async def list_vllm_services(state: StateDep, store: StoreDep, caller: Caller) -> VllmServicesResponse:
    """List the services that speak the OpenAI API (vLLM and compatible)."""
    items = []
    for obj in state.services.visible(caller):
        if _serves_openai(store, obj):
            s = ServiceResponse.of(obj)
            items.append(VllmService(id=s.id, name=s.name, recipe_name=s.recipe_name, endpoint=s.endpoint,
                                     status=s.status))
    return VllmServicesResponse(vllm_services=items)


@router.get("/{service_id}/models", response_model=ModelsResponse, summary="Get Vllm Models",
            responses={**NOT_FOUND, **NOT_OPENAI, **UPSTREAM})
async def get_vllm_models(service_id: str, store: StoreDep, state: StateDep, caller: Caller,
                          settings: SettingsDep) -> ModelsResponse:
    """Get the models a running service serves (its /v1/models)."""
    service = state.services.get(caller, service_id)
    endpoint = _endpoint(store, settings, service)
    data = await _upstream(prompting.list_models(await state.services.client_for(service), endpoint), settings)
    return ModelsResponse(models=[str(m["id"]) for m in data if m.get("id")], data=data)


@router.post("/{service_id}/prompt", response_model=PromptResponse, summary="Prompt Vllm Service",
             responses={**NOT_FOUND, **NOT_OPENAI, **UPSTREAM})
async def prompt_vllm_service(service_id: str, request: PromptRequest, store: StoreDep, state: StateDep,
                              caller: Caller, settings: SettingsDep) -> PromptResponse:
    """Send a prompt to a running service: chat completions, or completions when the model has no chat template."""
    service = state.services.get(caller, service_id)
    endpoint = _endpoint(store, settings, service)
    name = service["metadata"]["name"]
    if not caller.may_use_model(name, request.model or ""):
        raise prompting.forbidden_model(request.model or name)
    job = f"{service['metadata'].get('uid', '')}/{(service.get('status') or {}).get('jobId', '')}"
    result = await _upstream(prompting.prompt(await state.services.client_for(service), endpoint, request, job),
                             settings)
    return PromptResponse(response=result.response, model=result.model, tokens_used=result.tokens_used,
                          endpoint_used=result.endpoint_used, usage=result.usage,
                          service_id=name, endpoint=endpoint)
