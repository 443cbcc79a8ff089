"""The web console at /ui: plain HTML, CSS and JavaScript shipped in the package (nothing to build, nothing
loaded from the internet), over its own small JSON face (/ui/api) and the identity face (/api/api-keys)."""

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from aifactory.api.console.routes import STATIC, page, router

ROUTERS = (page, router)


def install(app: FastAPI) -> None:
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="console-static")
    for r in ROUTERS:
        app.include_router(r)


__all__ = ["install"]
