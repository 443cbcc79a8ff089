"""/v1/models (a FastAPI route) and the forwarded /v1 paths (plain ASGI: the hot path, see api/gateway.py).

Inference keys are enough for every path here; a key's allowed_models limits which models it lists and reaches.
"""

from __future__ import annotations

from typing import Any

import orjson
from aifactory.api.deps import Caller, Inference, StateDep, StoreDep
from aifactory.api.errors import BadRequest, NotFound
from aifactory.api.gateway import forward, header, json_object, read_body
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field
from starlette.routing import Match, Route

from aifactory.lifecycle import parse_rfc3339

FORWARDED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/reranking")

# Declared so that the OpenAPI document (and schemathesis, which checks answers against it) knows them.
REFUSALS = {code: {"description": text} for code, text in {
    401: "No API key, or an unknown, revoked or expired one", 403: "The key may not use this model",
    404: "No such model", 429: "Too many failed authentications; see Retry-After",
    503: "The model's service is not running (yet); see Retry-After"}.items()}

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Inference], responses=REFUSALS)


class OpenAIModel(BaseModel):
    id: str = Field(..., description="The service's name: what `model` takes.")
    object: str = "model"
    created: int = Field(..., description="When the service was created (Unix seconds).")
    owned_by: str = Field(..., description="The tenant (namespace) of the service.")


class OpenAIModelList(BaseModel):
    object: str = "list"
    data: list[OpenAIModel]


def _model(obj: dict) -> OpenAIModel:
    meta = obj["metadata"]
    return OpenAIModel(id=meta["name"], created=int(parse_rfc3339(meta.get("creationTimestamp")) or 0),
                       owned_by=meta.get("namespace", ""))


def _usable(caller, obj: dict) -> bool:
    return caller.may_use_model(obj["metadata"]["name"], *((obj.get("status") or {}).get("models") or ()))


@router.get("/models", response_model=OpenAIModelList, summary="List Models")
async def list_models(state: StateDep, store: StoreDep, caller: Caller) -> OpenAIModelList:
    """The services the key may use that speak the OpenAI API, whatever their phase (an on-demand service starts
    when asked)."""
    return OpenAIModelList(data=[_model(o) for o in state.services.visible(caller)
                                 if state.services.serves_openai(o) and _usable(caller, o)])


@router.get("/models/{model}", response_model=OpenAIModel, summary="Retrieve Model")
async def retrieve_model(model: str, state: StateDep, caller: Caller) -> OpenAIModel:
    """One model by its id (a service's name or a model id it serves), as `client.models.retrieve` asks."""
    obj = state.services.for_model(caller, model)
    if not state.services.serves_openai(obj):
        raise NotFound(f"The model `{model}` does not exist (service {obj['metadata']['name']} does not serve "
                       "the OpenAI API)")
    return _model(obj).model_copy(update={"id": model})


class Forwarded:
    """POST /v1/<path>: routed by `model`, waited for, forwarded. Plain ASGI: no model of the body, no copy of
    the answer."""

    def __init__(self, path: str):
        self.path = path

    async def __call__(self, scope: dict, receive, send) -> None:
        state = scope["app"].state.aifactory
        client = scope.get("client")
        caller = await state.authenticate(header(scope, b"authorization"), header(scope, b"x-api-key"),
                                          client[0] if client else "unknown")
        body = await read_body(receive)
        request: dict[str, Any] = json_object(body)
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("You must provide a model parameter: the name of a service (GET /v1/models lists "
                             "them).")
        services = state.services
        obj = services.for_model(caller, model)
        if not services.serves_openai(obj):
            raise BadRequest(f"Service {obj['metadata']['name']} runs recipe {obj['spec'].get('recipe')}, which "
                             "does not serve the OpenAI API")
        obj, endpoint = await services.ready_endpoint(obj)
        served = (obj.get("status") or {}).get("models") or ()
        if served and model not in served:
            # Asked by the service's name: the service itself knows only the ids it serves.
            request["model"] = served[0]
            body = orjson.dumps(request)
        await forward(state, obj, endpoint, scope, receive, send, body, path=self.path, caller=caller,
                      watch_disconnect=request.get("stream") is True)


class GatewayRoute(Route):
    """A plain-ASGI route that, like FastAPI's, leaves itself in the scope (for /metrics' route label)."""

    def matches(self, scope: dict) -> tuple[Match, dict]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def install(app: FastAPI) -> None:
    app.include_router(router)
    # First in the router's list: every inference request would otherwise be matched against all other routes.
    for path in reversed(FORWARDED_PATHS):
        app.router.routes.insert(0, GatewayRoute(path, Forwarded(path), methods=["POST"], include_in_schema=False))
