"""Talking to a service's OpenAI-compatible API: models, and prompts with the chat -> completions fallback.

Errors carry the service's own words: ServiceStarting when it cannot answer yet (connection refused, 503),
UpstreamError with its HTTP status and message otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from aifactory.api.errors import UpstreamError, UpstreamTimeout
from aifactory.api.seed.schemas import PromptRequest


class ServiceStarting(Exception):
    """The service does not answer yet (refused connection, or 503 while it loads)."""


@dataclass(frozen=True)
class PromptResult:
    response: str
    model: str
    endpoint_used: str
    usage: dict[str, Any] | None

    @property
    def tokens_used(self) -> int | None:
        if not self.usage:
            return None
        total = self.usage.get("total_tokens")
        if isinstance(total, int):
            return total
        parts = [self.usage.get(k) for k in ("prompt_tokens", "completion_tokens")]
        return sum(p for p in parts if isinstance(p, int)) if any(isinstance(p, int) for p in parts) else None


def upstream_message(response: httpx.Response) -> str:
    """The error text of an OpenAI-style (or vLLM-style) error body, else the body itself."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if isinstance(body.get(key), str) and body[key]:
                return body[key]
    return str(body)[:500]


async def _call(client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> httpx.Response:
    try:
        response = await client.request(method, url, **kw)
    except httpx.ConnectError as exc:
        raise ServiceStarting(f"Connection refused at {httpx.URL(url).host}:{httpx.URL(url).port}") from exc
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"{type(exc).__name__} from {url}", 504) from exc
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code == 503:
        raise ServiceStarting(f"{url} answered 503: {upstream_message(response)}")
    return response


def _json(response: httpx.Response, url: str) -> dict:
    try:
        body = response.json()
    except ValueError:
        raise UpstreamError(f"{url} answered {response.status_code} with a body that is not JSON",
                            response.status_code) from None
    if not isinstance(body, dict):
        raise UpstreamError(f"{url} answered {response.status_code} with JSON that is not an object",
                            response.status_code)
    return body


async def list_models(client: httpx.AsyncClient, endpoint: str) -> list[dict[str, Any]]:
    url = f"{endpoint.rstrip('/')}/v1/models"
    response = await _call(client, "GET", url)
    if response.status_code != 200:
        raise UpstreamError(upstream_message(response), response.status_code)
    data = _json(response, url).get("data")
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []


def _first_choice(body: dict) -> dict:
    choices = body.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    return first if isinstance(first, dict) else {}


def _usage(body: dict) -> dict[str, Any] | None:
    return body["usage"] if isinstance(body.get("usage"), dict) else None


def _chat_template_missing(response: httpx.Response) -> bool:
    return response.status_code == 400 and "chat template" in upstream_message(response).lower()


class DefaultModels:
    """The first model a service lists, remembered for a while: asking /v1/models before every prompt doubles the
    upstream calls. Keyed by the service's job and endpoint, so a new job (even on an old port) asks again."""

    def __init__(self, ttl_seconds: float = 30.0):
        self.ttl = ttl_seconds
        self._known: dict[str, tuple[str, float]] = {}

    async def get(self, client: httpx.AsyncClient, base: str, job: str = "") -> str:
        key = f"{job}@{base}"
        known = self._known.get(key)
        if known and time.monotonic() < known[1]:
            return known[0]
        models = [m.get("id") for m in await list_models(client, base) if m.get("id")]
        if not models:
            raise UpstreamError(f"{base}/v1/models lists no model", 502)
        self._known[key] = (str(models[0]), time.monotonic() + self.ttl)
        return str(models[0])


default_models = DefaultModels()


async def prompt(client: httpx.AsyncClient, endpoint: str, request: PromptRequest, job: str = "") -> PromptResult:
    """Chat completions first; when the model has no chat template, the completions endpoint."""
    base = endpoint.rstrip("/")
    model = request.model or await default_models.get(client, base, job)
    params = {"model": model, "max_tokens": request.max_tokens, "temperature": request.temperature}

    url = f"{base}/v1/chat/completions"
    response = await _call(client, "POST", url,
                           json={**params, "messages": [{"role": "user", "content": request.prompt}]})
    if response.status_code == 200:
        body = _json(response, url)
        message = _first_choice(body).get("message")
        text = message.get("content") if isinstance(message, dict) else None
        return PromptResult(str(text or ""), str(body.get("model") or model), "chat", _usage(body))
    if not _chat_template_missing(response):
        raise UpstreamError(upstream_message(response), response.status_code)

    url = f"{base}/v1/completions"
    response = await _call(client, "POST", url, json={**params, "prompt": request.prompt})
    if response.status_code != 200:
        raise UpstreamError(upstream_message(response), response.status_code)
    body = _json(response, url)
    return PromptResult(str(_first_choice(body).get("text") or ""), str(body.get("model") or model), "completions",
                        _usage(body))


def forbidden_model(model: str):
    from aifactory.api.identity.principal import Forbidden

    return Forbidden(f"This API key may not use model {model!r} (see its allowed_models).")
