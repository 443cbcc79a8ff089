"""The REST API: one FastAPI app, one face per API it speaks, all over the same service verbs and identity."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from aifactory import __version__
from aifactory.api import console, docs, errors, llamactl, lmstack, metrics, openai, seed, training
from aifactory.api.config import ApiSettings
from aifactory.api.deps import Admin
from aifactory.api.identity import routes as identity
from aifactory.api.state import ApiState

DESCRIPTION = ("AI services on Slurm, declared as Kubernetes AIService resources: every call here creates, reads or "
               "deletes one, so this API, kubectl and GitOps see the same services. Every path but `/`, `/health`, "
               "`/api/auth/login`, these docs and the web console's page (`/ui`) needs an API key "
               "(`Authorization: Bearer <key>` or `X-API-Key: <key>`): use the Authorize button.")

# Paths anyone may call without a key.
OPEN_PATHS = frozenset({"/", "/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json",
                        "/api/auth/login", "/ui"})


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    state = ApiState(settings or ApiSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start()
        yield
        await state.close()

    app = FastAPI(title=seed.root.SERVICE_NAME, version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    docs.install(app)  # /docs and /redoc with their assets served from here: no CDN (sites without internet)
    app.state.aifactory = state
    faces = errors.Faces()
    errors.install(app, faces)
    faces.add("/api/v1/", seed.render_error)
    for prefix in lmstack.PREFIXES:
        faces.add(prefix, lmstack.render_error)
    for prefix in training.PREFIXES:
        faces.add(prefix, training.render_error)
    faces.add("/v1/", openai.render_error)
    for prefix in llamactl.PREFIXES:
        faces.add(prefix, llamactl.render_error)
    for router in (*seed.ROUTERS, *lmstack.ROUTERS, *training.ROUTERS, identity.router):
        app.include_router(router)
    openai.install(app)
    llamactl.install(app)
    console.install(app)  # the web console at /ui

    def phases() -> Counter[str]:
        return Counter((obj.get("status") or {}).get("phase") or "pending" for obj in state.store.list_services())

    metrics.install(app, phases, dependencies=[Admin], traffic=state.traffic)
    return app
