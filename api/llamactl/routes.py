"""/api/v1/instances and /api/v1/version, /api/v1/server/*: llamactl's words over the service verbs.

The face's one table: phases -> llamactl's statuses (running, stopped, failed, and starting while a job is queued
or loading); an instance's options -> an AIService spec (recipe, model, environment, resources, on demand, idle
timeout, restart policy).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from aifactory.api.aiservices import availability
from aifactory.api.deps import Caller, Inference, Management, StateDep, StoreDep
from aifactory.api.errors import BadRequest, NotFound, ServiceNotAvailable
from aifactory.api.gateway import forward, header, read_body
from aifactory.api.openai.routes import GatewayRoute
from fastapi import APIRouter, FastAPI, Path, Query, Response, status
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from aifactory import __version__
from aifactory.lifecycle import parse_rfc3339
from aifactory.models import EnvMap, Resources, Role

PREFIXES = ("/api/v1/instances", "/api/v1/version", "/api/v1/server")
STATUS = {"running": "running", "pending": "starting", "building": "starting", "starting": "starting",
          "stopped": "stopped", "cancelled": "stopped", "completed": "stopped", "failed": "failed"}
# llamactl's backend_type -> the recipe that runs it.
BACKENDS = {"llama_cpp": "inference/llama-cpp", "vllm": "inference/vllm", "mlx_lm": None}

# Declared so that the OpenAPI document (and schemathesis, which checks answers against it) knows them.
REFUSALS = {code: {"description": text} for code, text in {
    400: "The request cannot be done as asked (Kubernetes' words)",
    401: "No API key, or an unknown, revoked or expired one", 403: "The key's role does not allow this",
    404: "No such instance", 409: "The name is taken, or a running limit is reached",
    429: "Too many failed authentications; see Retry-After", 503: "The instance is not running (yet)"}.items()}

router = APIRouter(prefix="/api/v1/instances", tags=["llamactl"], dependencies=[Management], responses=REFUSALS)
system = APIRouter(prefix="/api/v1", tags=["llamactl"], dependencies=[Inference], responses=REFUSALS)


class Instance(BaseModel):
    name: str
    status: str = Field(..., description="running, starting, stopped or failed (what llamactl says).")
    created: int = Field(..., description="When the instance was created (Unix seconds).")


class InstanceDetails(Instance):
    recipe: str | None = None
    phase: str | None = Field(None, description="aifactory's phase (pending, starting, running, stopped, ...).")
    message: str | None = None
    job_id: str | None = None
    pending_reason: str | None = None
    expected_start: str | None = None
    on_demand_start: bool = False
    idle_timeout: int | None = None


class InstanceOptions(BaseModel):
    """An instance's configuration: llamactl's fields where they mean something here, and the recipe's."""

    model_config = ConfigDict(extra="forbid")

    recipe: str | None = Field(None, description="The recipe (e.g. inference/vllm); default from backend_type, else "
                                                 "inference/llama-cpp.")
    backend_type: str | None = Field(None, description="llama_cpp or vllm: chooses the recipe.")
    model: str | None = Field(None, description="The model: the recipe's model setting (e.g. VLLM_MODEL).")
    backend_options: dict[str, Any] | None = Field(None, description="{'model': ...} as llamactl takes it.")
    environment: EnvMap | None = Field(None, description="Environment for the service process.")
    resources: dict[str, Any] | None = Field(None, description="cpu, memory (32G), gpu, timeLimit (minutes), nodes.")
    on_demand_start: bool | None = Field(None, description="A request through /v1 starts the stopped instance.")
    idle_timeout: int | None = Field(None, ge=1, description="Stop after this many minutes without a request.")
    start_timeout: int | None = Field(None, ge=1, le=3600, description="How long a request waits for the start.")
    auto_restart: bool | None = Field(None, description="Restart after a failure (restart policy OnFailure).")
    max_restarts: int | None = Field(None, ge=0)
    restart_delay: int | None = Field(None, ge=0, description="Seconds before the first restart.")


def instance(obj: dict) -> Instance:
    meta = obj.get("metadata") or {}
    phase = (obj.get("status") or {}).get("phase") or "pending"
    return Instance(name=meta.get("name", ""), status=STATUS.get(phase, phase),
                    created=int(parse_rfc3339(meta.get("creationTimestamp")) or time.time()))


def details(obj: dict) -> InstanceDetails:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    return InstanceDetails(**instance(obj).model_dump(), recipe=spec.get("recipe"), phase=st.get("phase"),
                           message=st.get("message"), job_id=st.get("jobId"), pending_reason=st.get("pendingReason"),
                           expected_start=st.get("expectedStart"), on_demand_start=bool(spec.get("onDemand")),
                           idle_timeout=spec.get("idleTimeoutMinutes"))


def _spec(state, options: InstanceOptions, base: dict | None = None) -> tuple[str, dict]:
    """(recipe, spec fields) for these options; `base` is the spec they change (PUT)."""
    recipe_name = options.recipe or BACKENDS.get(options.backend_type or "", "") or (base or {}).get("recipe") \
        or state.settings.llamactl_default_recipe
    if options.backend_type and BACKENDS.get(options.backend_type, "") is None:
        raise BadRequest(f"backend_type {options.backend_type} does not run on this site; give a recipe")
    recipe = state.services.recipe(recipe_name)
    env = dict((base or {}).get("env") or {})
    env.update(options.environment or {})
    model = options.model or (options.backend_options or {}).get("model")
    if model:
        if recipe.model_setting is None:
            raise BadRequest(f"Recipe {recipe.path} has no model setting; set its environment instead")
        env[recipe.settings[recipe.model_setting].env] = str(model)
    fields: dict[str, Any] = {"env": env}
    if options.resources is not None:
        try:
            fields["resources"] = Resources.model_validate(options.resources)
        except ValueError as exc:
            raise BadRequest(f"resources: {exc}") from None
    if options.on_demand_start is not None:
        fields["on_demand"] = options.on_demand_start
    if options.idle_timeout is not None:
        fields["idle_timeout_minutes"] = options.idle_timeout
    if options.start_timeout is not None:
        fields["start_timeout_seconds"] = options.start_timeout
    if options.auto_restart is not None:
        restart = {"policy": "OnFailure" if options.auto_restart else "Never"}
        if options.max_restarts is not None:
            restart["maxRestarts"] = options.max_restarts
        if options.restart_delay is not None:
            restart["backoffSeconds"] = options.restart_delay
        fields["restart"] = restart
    return recipe.path, fields


def _own(state, caller, name: str) -> dict:
    """The caller's tenant's instance of that name (llamactl's names are per server: here, per tenant)."""
    obj = state.store.service(caller.tenant, name)
    if obj is None:
        raise NotFound(f"Instance {name} not found")
    return obj


Name = Annotated[str, Path(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]


@router.get("", response_model=list[Instance], summary="List Instances")
async def list_instances(state: StateDep, store: StoreDep, caller: Caller) -> list[Instance]:
    return [instance(o) for o in store.list_services(caller.tenant)]


@router.get("/{name}", response_model=InstanceDetails, summary="Get Instance")
async def get_instance(name: Name, state: StateDep, store: StoreDep, caller: Caller) -> InstanceDetails:
    return details(_own(state, caller, name))


@router.post("/{name}", response_model=InstanceDetails, status_code=status.HTTP_201_CREATED,
             summary="Create Instance")
async def create_instance(name: Name, state: StateDep, store: StoreDep, caller: Caller,
                          options: InstanceOptions | None = None) -> InstanceDetails:
    """Create and start an instance (409 when the name is taken or a running limit is reached)."""
    recipe, fields = _spec(state, options or InstanceOptions())
    env, resources = fields.pop("env"), fields.pop("resources", None)
    return details(await state.services.create(caller, recipe, env=env, resources=resources, name=name, **fields))


@router.put("/{name}", response_model=InstanceDetails, summary="Update Instance")
async def update_instance(name: Name, options: InstanceOptions, state: StateDep, store: StoreDep,
                          caller: Caller) -> InstanceDetails:
    """Change the configuration: a running instance gets a new job with it."""
    obj = _own(state, caller, name)
    recipe, fields = _spec(state, options, obj.get("spec"))
    return details(await state.services.update(caller, obj, recipe=recipe, **fields))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               summary="Delete Instance")
async def delete_instance(name: Name, state: StateDep, store: StoreDep, caller: Caller) -> Response:
    await state.services.delete(caller, _own(state, caller, name))
    return Response(status_code=204)


@router.post("/{name}/start", response_model=InstanceDetails, summary="Start Instance")
async def start_instance(name: Name, state: StateDep, store: StoreDep, caller: Caller) -> InstanceDetails:
    obj = await state.services.start(caller, _own(state, caller, name))
    return details(obj).model_copy(update={"status": "running" if instance(obj).status == "running" else "starting"})


@router.post("/{name}/stop", response_model=InstanceDetails, summary="Stop Instance")
async def stop_instance(name: Name, state: StateDep, store: StoreDep, caller: Caller) -> InstanceDetails:
    return details(await state.services.stop(caller, _own(state, caller, name))).model_copy(
        update={"status": "stopping"})


@router.post("/{name}/restart", response_model=InstanceDetails, summary="Restart Instance")
async def restart_instance(name: Name, state: StateDep, store: StoreDep, caller: Caller) -> InstanceDetails:
    return details(await state.services.restart(caller, _own(state, caller, name))).model_copy(
        update={"status": "restarting"})


@router.get("/{name}/logs", response_class=PlainTextResponse, summary="Get Instance Logs")
async def instance_logs(name: Name, state: StateDep, store: StoreDep, caller: Caller,
                        lines: Annotated[int, Query(ge=-1, description="Last lines; -1 or absent: all")] = -1
                        ) -> PlainTextResponse:
    tail = await state.services.logs(caller, _own(state, caller, name), lines if lines > 0 else 10_000)
    return PlainTextResponse(tail.text)


class InstanceProxy:
    """GET|POST /api/v1/instances/{name}/proxy/...: forwarded to the instance with the prefix stripped (503 when it
    is not running). Plain ASGI, like OpenAI's face."""

    async def __call__(self, scope: dict, receive, send) -> None:
        state = scope["app"].state.aifactory
        client = scope.get("client")
        caller = await state.authenticate(header(scope, b"authorization"), header(scope, b"x-api-key"),
                                          client[0] if client else "unknown")
        caller.require(Role.management)
        await state.store.ready()
        name, rest = scope["path_params"]["name"], scope["path_params"]["path"]
        obj = _own(state, caller, name)
        endpoint, why, may_come_up = availability(obj)
        if endpoint is None:
            raise ServiceNotAvailable(f"Instance {name} is not running ({why})",
                                      retry_after=state.settings.retry_after_seconds if may_come_up else None)
        body = await read_body(receive)
        await forward(state, obj, endpoint, scope, receive, send, body, path="/" + rest, caller=caller,
                      watch_disconnect=True)


# ---- what serves ----------------------------------------------------------------------------------------------

@system.get("/version", response_class=PlainTextResponse, summary="Get Version")
async def version() -> PlainTextResponse:
    return PlainTextResponse(f"Version: aifactory {__version__}\nCommit: unknown\nBuild Time: unknown\n")


@system.get("/server/version", response_class=PlainTextResponse, summary="Get Server Version")
async def server_version(state: StateDep, store: StoreDep) -> PlainTextResponse:
    """The Slurm clusters (slurmrestd API version, transport) and the inference engines the recipes run."""
    lines = [f"aifactory {__version__}"]
    for obj in store.clusters.objects():
        name = obj["metadata"]["name"]
        st, spec = obj.get("status") or {}, obj.get("spec") or {}
        lines.append(f"Slurm cluster {name}: slurmrestd API {st.get('apiVersion') or 'unknown'} "
                     f"(transport {spec.get('transport') or 'rest'})")
    for recipe in sorted(store.catalog().all().values(), key=lambda r: r.path):
        if recipe.openai_api:
            engine = recipe.image or " ".join(recipe.command[:3])
            lines.append(f"{recipe.path} {recipe.version}: {engine}")
    return PlainTextResponse("\n".join(lines) + "\n")


@system.get("/server/devices", response_class=PlainTextResponse, summary="List Devices")
async def server_devices(state: StateDep, store: StoreDep) -> PlainTextResponse:
    """The clusters' GPUs by node, from Slurm (a node without GPUs says so)."""
    lines = []
    for view in await state.nodes.all():
        node = view.node
        head = f"{view.id}: {node.state_text}, {node.cpus} CPUs, {node.memory_mb} MiB"
        if not view.devices:
            lines.append(f"{head}, no GPU")
            continue
        lines.append(f"{head}, {len(view.devices)} GPUs")
        for i, gpu in enumerate(view.devices):
            memory = f", {gpu.memory_mb} MiB" if gpu.memory_mb else ""
            lines.append(f"  GPU {i}: {gpu.name}{memory}{' (in use)' if gpu.in_use else ''}")
    return PlainTextResponse("\n".join(lines or ["no nodes"]) + "\n")


@system.get("/server/help", response_class=PlainTextResponse, summary="Get Server Help")
async def server_help(state: StateDep, store: StoreDep) -> PlainTextResponse:
    """The recipes an instance can use and their settings (what POST /api/v1/instances/{name} takes)."""
    lines = [("Instance options: recipe, model, environment, resources {cpu, memory, gpu, timeLimit, nodes}, "
              "on_demand_start, idle_timeout (minutes), start_timeout (seconds), auto_restart, max_restarts, "
              "restart_delay."), ""]
    for recipe in sorted(store.catalog().all().values(), key=lambda r: r.path):
        lines.append(f"{recipe.path}: {recipe.description}")
        for name, setting in recipe.settings.items():
            default = recipe.environment.get(setting.env)
            lines.append(f"  {name} ({setting.env}{f', default {default}' if default else ''})"
                         f"{': ' + setting.description if setting.description else ''}")
    return PlainTextResponse("\n".join(lines) + "\n")


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.include_router(system)
    app.router.routes.append(GatewayRoute("/api/v1/instances/{name}/proxy/{path:path}", InstanceProxy(),
                                          methods=["GET", "POST"], include_in_schema=False))
