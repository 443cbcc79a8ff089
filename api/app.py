"""The REST API of the seed (AI Factory Server Service) over AIService resources."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from aifactory import __version__

from aifactory.api import errors, metrics
from aifactory.api.config import ApiSettings
from aifactory.api.deps import ApiState
from aifactory.api.routes import recipes, root, services, vllm

DESCRIPTION = ("AI services on Slurm, declared as Kubernetes AIService resources: every call here creates, reads or "
               "deletes one, so this API, kubectl and GitOps see the same services.")


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    state = ApiState(settings or ApiSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.store  # start watching at once, not at the first request  # noqa: B018
        yield
        await state.close()

    app = FastAPI(title=root.SERVICE_NAME, version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.aifactory = state
    errors.install(app)
    for module in (root, services, recipes, vllm):
        app.include_router(module.router)

    def phases() -> Counter[str]:
        return Counter((obj.get("status") or {}).get("phase") or "pending" for obj in state.store.list_services())

    metrics.install(app, phases)
    return app
