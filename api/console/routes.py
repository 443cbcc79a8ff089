"""The web console's face: /ui (the page, plain files shipped in the package) and /ui/api (what the page shows, in
the core's words: phases, Slurm states, pending reasons, nodes, conditions), over the service and node verbs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from aifactory.api.aiservices import visible_env
from aifactory.api.deps import Caller, Management, StateDep, StoreDep
from aifactory.api.errors import BadRequest
from aifactory.api.nodes import NodeView
from aifactory.api.services import holds_job
from aifactory.attempts import parse_attempts
from aifactory.models import DNS_LABEL_PATTERN, MEMORY_PATTERN, Resources
from aifactory.recipes import Catalog, RecipeNotFound

STATIC = Path(__file__).parent / "static"
# The page loads and asks only this server; no inline script or style.
SELF_ONLY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"

page = APIRouter(include_in_schema=False)
class Detail(BaseModel):
    detail: str


ERRORS = {code: {"model": Detail, "description": text} for code, text in {
    400: "The request cannot be done as asked (a setting the recipe does not have, Kubernetes' refusal)",
    401: "No API key, or an unknown, revoked or expired one",
    403: "The key's role is not management or admin",
    404: "No such service or recipe (or not the caller's)",
    409: "A service of that name exists, or a running limit is reached",
    429: "Too many failed authentications; see Retry-After",
    503: "Kubernetes or Slurm not reachable",
}.items()}

router = APIRouter(prefix="/ui/api", tags=["console"], dependencies=[Management], responses=ERRORS)


@page.get("/ui")
@page.get("/ui/")
async def console_page() -> FileResponse:
    """The console: one page; it asks for an API key and keeps it in the tab's session storage only."""
    return FileResponse(STATIC / "index.html",
                        headers={"Cache-Control": "no-cache", "Content-Security-Policy": SELF_ONLY})


# ---- bodies ----------------------------------------------------------------------------------------------

class Condition(BaseModel):
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None


class Service(BaseModel):
    id: str = Field(..., description="The AIService's UID.")
    name: str
    namespace: str
    recipe: str
    phase: str
    slurm_state: str | None = None
    pending_reason: str | None = None
    expected_start: str | None = None
    node: str | None = None
    job_id: str | None = None
    endpoint: str | None = None
    message: str | None = None
    created_at: str | None = None
    stopped: bool = False
    deleting: bool = False


class AttemptView(BaseModel):
    """One Slurm job of the service (status.attempts), in python names; its logs: .../logs?attempt=number."""

    number: int
    job_id: str
    started_by: str | None = None
    node: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    end_state: str | None = None
    exit_code: int | None = None
    reason: str | None = None


class ServiceDetail(Service):
    conditions: list[Condition] = Field(default_factory=list)
    attempts: list[AttemptView] = Field(default_factory=list, description="The newest jobs of the service, oldest "
                                                                          "first.")
    settings: dict[str, str] = Field(default_factory=dict, description="The recipe's settings the service gives.")
    environment: dict[str, str] = Field(default_factory=dict, description="Other environment it sets (***: another "
                                                                          "tenant's).")
    resources: dict[str, Any] = Field(default_factory=dict)
    cluster: str = "default"
    nodelist: str | None = None
    actions: list[str] = Field(default_factory=list, description="What the caller may do to it now.")


class ServiceList(BaseModel):
    items: list[Service]


class JobSize(BaseModel):
    """What the Slurm job asks for; unset: the recipe's default."""

    model_config = ConfigDict(extra="forbid")

    cpu: int | None = Field(None, ge=1)
    memory: str | None = Field(None, pattern=MEMORY_PATTERN)
    gpu: int | None = Field(None, ge=0)
    time_limit: int | None = Field(None, ge=1, description="Minutes.")


class ServiceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: str = Field(..., min_length=1, description="Recipe path (inference/vllm) or name.")
    name: str | None = Field(None, max_length=63, pattern=DNS_LABEL_PATTERN, description="Default: from the recipe.")
    settings: dict[str, str] = Field(default_factory=dict, description="The recipe's settings by name; empty ones "
                                                                       "keep the recipe's default.")
    resources: JobSize = Field(default_factory=JobSize)


class Logs(BaseModel):
    logs: str
    job_id: str | None = None
    attempt: int | None = Field(None, description="Which of the service's jobs it is (1 = its first).")


class Setting(BaseModel):
    name: str
    env: str
    description: str = ""
    default: str | None = None


class RecipeInfo(BaseModel):
    path: str
    name: str
    category: str
    description: str = ""
    runtime: str
    settings: list[Setting]
    model_setting: str | None = None
    resources: dict[str, Any]


class RecipeList(BaseModel):
    items: list[RecipeInfo]


class Gpu(BaseModel):
    name: str
    memory_mb: int | None = None
    in_use: bool = False


class Node(BaseModel):
    id: str
    cluster: str
    name: str
    state: str
    available: bool
    reason: str | None = None
    cpus: int
    cpus_allocated: int
    cpu_load: float | None = None
    memory_mb: int
    memory_free_mb: int | None = None
    memory_allocated_mb: int
    gpus: list[Gpu]
    last_contact: float | None = None
    read_at: float | None = None


class NodeList(BaseModel):
    items: list[Node]


# ---- views -----------------------------------------------------------------------------------------------

def service_view(obj: dict) -> dict[str, Any]:
    meta, spec, st = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    return {"id": meta.get("uid") or meta.get("name", ""), "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""), "recipe": spec.get("recipe", ""),
            "phase": st.get("phase") or "pending", "slurm_state": st.get("slurmState"),
            "pending_reason": st.get("pendingReason"), "expected_start": st.get("expectedStart"),
            "node": st.get("node"), "job_id": st.get("jobId"), "endpoint": st.get("endpoint"),
            "message": st.get("message"), "created_at": meta.get("creationTimestamp"),
            "stopped": bool(spec.get("stopped")), "deleting": bool(meta.get("deletionTimestamp"))}


def service_detail(obj: dict, catalog: Catalog, owner: bool) -> ServiceDetail:
    spec = obj.get("spec") or {}
    env = visible_env(spec.get("env") or {}, owner)
    settings = {}
    try:
        recipe = catalog.get(spec.get("recipe", ""))
    except RecipeNotFound:
        recipe = None
    for name, setting in (recipe.settings.items() if recipe else ()):
        if setting.env in env:
            settings[name] = env.pop(setting.env)
    conditions = [Condition(type=c.get("type", ""), status=c.get("status", ""), reason=c.get("reason", ""),
                            message=c.get("message", ""), last_transition_time=c.get("lastTransitionTime"))
                  for c in (obj.get("status") or {}).get("conditions") or []]
    attempts = [AttemptView(**a.model_dump(include=set(AttemptView.model_fields)))
                for a in parse_attempts((obj.get("status") or {}).get("attempts"))]
    return ServiceDetail(**service_view(obj), conditions=conditions, attempts=attempts, settings=settings,
                         environment=env, resources=spec.get("resources") or {},
                         cluster=spec.get("cluster") or "default", nodelist=spec.get("nodelist"),
                         actions=actions(obj))


def actions(obj: dict) -> list[str]:
    """The verbs that apply to the service as it is: stop one that holds a job (or will), start one that is
    stopped or has ended, delete any that is not going already."""
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return []
    stopped = bool((obj.get("spec") or {}).get("stopped"))
    return ["start", "delete"] if stopped or not holds_job(obj) else ["stop", "delete"]


def node_view(view: NodeView) -> Node:
    n = view.node
    return Node(id=view.id, cluster=view.cluster, name=n.name, state=n.state_text, available=n.available,
                reason=n.reason or None, cpus=n.cpus, cpus_allocated=n.cpus_allocated, cpu_load=n.cpu_load,
                memory_mb=n.memory_mb, memory_free_mb=n.memory_free_mb, memory_allocated_mb=n.memory_allocated_mb,
                gpus=[Gpu(name=d.name, memory_mb=d.memory_mb, in_use=d.in_use) for d in view.devices],
                last_contact=n.last_contact, read_at=view.read_at)


# ---- routes ----------------------------------------------------------------------------------------------

async def get_service(state: StateDep, store: StoreDep, caller: Caller, service_id: str) -> dict:
    return state.services.get(caller, service_id)


ServiceDep = Annotated[dict, Depends(get_service)]


@router.get("/services", response_model=ServiceList, summary="Console: services")
async def list_services(state: StateDep, store: StoreDep, caller: Caller) -> ServiceList:
    return ServiceList(items=[Service(**service_view(o)) for o in state.services.visible(caller)])


@router.post("/services", response_model=ServiceDetail, status_code=status.HTTP_201_CREATED,
             summary="Console: create a service from a recipe")
async def create_service(body: ServiceCreate, state: StateDep, store: StoreDep, caller: Caller) -> ServiceDetail:
    recipe = state.services.recipe(body.recipe)
    try:
        env = recipe.environment_for({k: v for k, v in body.settings.items() if v != ""})
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    created = await state.services.create(caller, recipe.path, env=env, name=body.name,
                                          resources=Resources(**body.resources.model_dump()))
    return service_detail(created, store.catalog(), owner=True)


@router.get("/services/{service_id}", response_model=ServiceDetail, summary="Console: one service")
async def get_service_detail(service: ServiceDep, store: StoreDep, caller: Caller) -> ServiceDetail:
    return service_detail(service, store.catalog(), caller.tenant == service["metadata"].get("namespace"))


@router.delete("/services/{service_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Console: delete")
async def delete_service(service: ServiceDep, state: StateDep, caller: Caller) -> Response:
    await state.services.delete(caller, service)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/services/{service_id}/stop", response_model=ServiceDetail, summary="Console: stop (keep it)")
async def stop_service(service: ServiceDep, state: StateDep, store: StoreDep, caller: Caller) -> ServiceDetail:
    """The job is cancelled; the service stays, stopped, to be started again."""
    return service_detail(await state.services.stop(caller, service), store.catalog(), True)


@router.post("/services/{service_id}/start", response_model=ServiceDetail, summary="Console: start again")
async def start_service(service: ServiceDep, state: StateDep, store: StoreDep, caller: Caller) -> ServiceDetail:
    """A new job for a stopped or ended service."""
    return service_detail(await state.services.start(caller, service), store.catalog(), True)


@router.get("/services/{service_id}/logs", response_model=Logs, summary="Console: log tail")
async def service_logs(service: ServiceDep, state: StateDep, caller: Caller,
                       lines: Annotated[int, Query(ge=1, le=10_000)] = 200,
                       attempt: Annotated[int | None, Query(ge=1, description="The service's Nth job (its "
                                                            "attempts) instead of its current one.")] = None) -> Logs:
    tail = await state.services.logs(caller, service, lines, attempt)
    return Logs(logs=tail.text, job_id=tail.job_id, attempt=tail.attempt)


@router.get("/recipes", response_model=RecipeList, summary="Console: recipes and their settings")
async def list_recipes(store: StoreDep) -> RecipeList:
    items = []
    for recipe in sorted(store.catalog().all().values(), key=lambda r: r.path):
        settings = [Setting(name=name, env=s.env, description=s.description, default=recipe.environment.get(s.env))
                    for name, s in recipe.settings.items()]
        items.append(RecipeInfo(path=recipe.path, name=recipe.name, category=recipe.category,
                                description=recipe.description, runtime=recipe.runtime.value, settings=settings,
                                model_setting=recipe.model_setting, resources=recipe.resources.wire()))
    return RecipeList(items=items)


@router.get("/nodes", response_model=NodeList, summary="Console: the clusters' nodes")
async def list_nodes(state: StateDep, store: StoreDep) -> NodeList:
    return NodeList(items=[node_view(v) for v in await state.nodes.all()])
