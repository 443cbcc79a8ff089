"""GET / and GET /health."""

from __future__ import annotations

from fastapi import APIRouter

from aifactory import __version__
from aifactory.api.seed.schemas import HealthResponse, RootResponse

SERVICE_NAME = "AI Factory Server Service"
API_PREFIX = "/api/v1"

router = APIRouter(tags=["health"])


@router.get("/", response_model=RootResponse, summary="Root")
async def root() -> RootResponse:
    """Root endpoint with service information."""
    return RootResponse(service=SERVICE_NAME, version=__version__, docs="/docs", redoc="/redoc",
                        openapi="/openapi.json", api=API_PREFIX)


@router.get("/health", response_model=HealthResponse, summary="Health")
async def health() -> HealthResponse:
    """Health check endpoint (the process answers; it does not ask Kubernetes)."""
    return HealthResponse(service=SERVICE_NAME, version=__version__)
