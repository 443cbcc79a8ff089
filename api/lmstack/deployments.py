"""/api/deployments: LMStack's deployments are AIServices of the caller's tenant, made through the service verbs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from aifactory.api.deps import Caller, Management, StateDep, StoreDep
from aifactory.api.errors import BadRequest
from aifactory.api.lmstack import words
from aifactory.api.lmstack.errors import ERRORS
from aifactory.api.lmstack.schemas import Deployment, DeploymentCreate, DeploymentCreated, DeploymentList, Logs
from aifactory.api.nodes import node_id
from aifactory.models import Recipe, Resources
from aifactory.recipes import Catalog, RecipeNotFound

router = APIRouter(prefix="/api/deployments", tags=["lmstack"], dependencies=[Management], responses=ERRORS)


def _recipe(catalog: Catalog, path: str) -> Recipe | None:
    try:
        return catalog.get(path)
    except RecipeNotFound:
        return None


def deployment(obj: dict, catalog: Catalog) -> Deployment:
    """An AIService in LMStack's words."""
    meta, spec, st = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    recipe = _recipe(catalog, spec.get("recipe") or "")
    env = spec.get("env") or {}
    model, config = None, {}
    if recipe is not None:
        for name, setting in recipe.settings.items():
            value = env.get(setting.env)
            if name == recipe.model_setting:
                model = value or recipe.environment.get(setting.env)
            elif value is not None:
                config[name] = value
    config.update({k: v for k, v in (spec.get("resources") or {}).items() if k in words.RESOURCE_KEYS.values()})
    cluster = spec.get("cluster") or "default"
    node = st.get("node") or spec.get("nodelist")
    return Deployment(
        id=meta.get("uid") or meta.get("name", ""), name=meta.get("name", ""),
        backend=words.backend(spec.get("recipe") or ""), model=model, status=words.status(obj),
        worker_id=node_id(cluster, node) if node else None, container_id=st.get("jobId"), port=words.port(obj),
        created_at=meta.get("creationTimestamp"), updated_at=words.updated_at(obj), config=config,
        slurm_state=st.get("slurmState"), message=st.get("message"),
    )


async def get_deployment(state: StateDep, store: StoreDep, caller: Caller,
                         deployment_id: Annotated[str, Path(max_length=253)]) -> dict:
    return state.services.get(caller, deployment_id)


DeploymentDep = Annotated[dict, Depends(get_deployment)]


@router.get("", response_model=DeploymentList, summary="List Deployments")
async def list_deployments(
    state: StateDep, store: StoreDep, caller: Caller,
    skip: Annotated[int, Query(ge=0, description="Number of records to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Maximum records to return")] = 100,
    status_: Annotated[str | None, Query(alias="status", description=f"One of {', '.join(words.STATUSES)}")] = None,
    worker_id: Annotated[str | None, Query(description="Only deployments on (or pinned to) this worker")] = None,
) -> DeploymentList:
    """The caller's tenant's deployments (an admin's: every tenant's), oldest first."""
    catalog = store.catalog()
    items = [deployment(obj, catalog) for obj in state.services.visible(caller)]
    items = [d for d in items if (status_ is None or d.status == status_)
             and (worker_id is None or d.worker_id == worker_id)]
    return DeploymentList(items=items[skip:skip + limit], total=len(items))


@router.post("", response_model=DeploymentCreated, status_code=status.HTTP_201_CREATED, summary="Create Deployment")
async def create_deployment(body: DeploymentCreate, state: StateDep, store: StoreDep,
                            caller: Caller) -> DeploymentCreated:
    """Run `model` with the `backend` recipe: an AIService that the operator runs as a Slurm job, on `worker_id`
    only when given (503 "Worker offline" when that node cannot take jobs now)."""
    try:
        recipe = state.services.recipe(body.backend)
    except RecipeNotFound:
        known = ", ".join(sorted({r.name for r in store.catalog().all().values()}))
        raise BadRequest(f"Unknown backend {body.backend!r}; the backends are the recipes: {known}") from None
    env, resources = settings_env(recipe, body)
    placement = {}
    if body.worker_id:
        view = await state.nodes.available(body.worker_id)
        placement = {"cluster": view.cluster, "nodelist": view.node.name}
    created = await state.services.create(caller, recipe.path, env=env, resources=resources, name=body.name,
                                          **placement)
    return DeploymentCreated(id=created["metadata"]["uid"], name=created["metadata"]["name"])


def settings_env(recipe: Recipe, body: DeploymentCreate) -> tuple[dict[str, str], Resources]:
    """`model` and `config` as the recipe's environment, and the config's job sizes as resources."""
    if body.model is not None and recipe.model_setting is None:
        raise BadRequest(f"Backend {recipe.name} takes no model when it starts (its recipe has no model setting)")
    settings = {k: v for k, v in body.config.items() if k not in words.RESOURCE_KEYS and k != recipe.model_setting}
    sizes = {words.RESOURCE_KEYS[k]: v for k, v in body.config.items() if k in words.RESOURCE_KEYS}
    if body.model is not None:
        settings[recipe.model_setting] = body.model
    try:
        env = recipe.environment_for(settings)
    except ValueError:
        known = sorted([k for k in recipe.settings if k != recipe.model_setting] + list(words.RESOURCE_KEYS))
        unknown = sorted(set(settings) - set(recipe.settings))
        raise BadRequest(f"config key {unknown[0]!r} is not a setting of backend {recipe.name} "
                         f"({', '.join(known)})") from None
    try:
        resources = Resources.model_validate(sizes)
    except ValueError as exc:
        raise BadRequest(f"config: {exc}") from None
    return env, resources


@router.get("/{deployment_id}", response_model=Deployment, summary="Get Deployment")
async def get_deployment_details(service: DeploymentDep, store: StoreDep) -> Deployment:
    return deployment(service, store.catalog())


@router.delete("/{deployment_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete Deployment")
async def delete_deployment(service: DeploymentDep, state: StateDep, caller: Caller) -> Response:
    """Delete the AIService; the operator cancels its Slurm job before the resource goes."""
    await state.services.delete(caller, service)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{deployment_id}/logs", response_model=Logs, summary="Get Deployment Logs")
async def get_deployment_logs(service: DeploymentDep, state: StateDep, caller: Caller,
                              lines: Annotated[int, Query(ge=1, le=10_000, description="Number of log lines")] = 100
                              ) -> Logs:
    """The tail of the Slurm job's output (stdout and stderr)."""
    return Logs(logs=(await state.services.logs(caller, service, lines)).text)
