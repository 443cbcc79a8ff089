"""How llamactl's face says what went wrong: `{"error": "..."}` (seed 003's shape), Retry-After kept."""

from __future__ import annotations

from aifactory.api.errors import ApiError
from fastapi.responses import JSONResponse, Response


def render_error(error: ApiError) -> Response:
    return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers or None)
