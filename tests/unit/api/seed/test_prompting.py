"""Prompts and models against the OpenAI test double, in process (httpx's ASGI transport): the chat -> completions
fallback, the not-ready and error cases."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from aifactory.api.seed import prompting
from aifactory.api.seed.schemas import PromptRequest
from aifactory.servers.openai_test_server import create_app

ENDPOINT = "http://svc.test:8000"


@pytest.fixture(autouse=True)
def fresh_default_models(monkeypatch):
    # The tests share one made-up endpoint; each starts without remembered models.
    monkeypatch.setattr(prompting, "default_models", prompting.DefaultModels())


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app))


async def test_chat_is_used_when_the_model_has_a_chat_template() -> None:
    async with client_for(create_app("demo")) as client:
        result = await prompting.prompt(client, ENDPOINT, PromptRequest(prompt="Hello, world!"))
    assert (result.response, result.model, result.endpoint_used) == ("echo: Hello, world!", "demo", "chat")
    assert result.usage == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert result.tokens_used == 5


async def test_without_chat_template_the_completions_endpoint_answers() -> None:
    async with client_for(create_app("base", chat_template=False)) as client:
        result = await prompting.prompt(client, ENDPOINT, PromptRequest(prompt="one two three", max_tokens=3))
    assert (result.response, result.model, result.endpoint_used) == ("echo: one two", "base", "completions")
    assert result.tokens_used == 6


async def test_max_tokens_and_the_given_model_reach_the_service() -> None:
    async with client_for(create_app("demo")) as client:
        result = await prompting.prompt(client, ENDPOINT, PromptRequest(prompt="a b c d e", max_tokens=2,
                                                                        model="demo"))
        assert result.response == "echo: a"
        with pytest.raises(prompting.UpstreamError) as err:
            await prompting.prompt(client, ENDPOINT, PromptRequest(prompt="x", model="other"))
    assert err.value.status == 404 and "other" in str(err.value)


async def test_a_loading_service_is_starting_not_an_error() -> None:
    async with client_for(create_app("demo", startup_delay=3600)) as client:
        with pytest.raises(prompting.ServiceStarting, match="503"):
            await prompting.prompt(client, ENDPOINT, PromptRequest(prompt="hi"))
        with pytest.raises(prompting.ServiceStarting):
            await prompting.list_models(client, ENDPOINT)


async def test_connection_refused_is_starting_with_the_address() -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises(prompting.ServiceStarting, match=r"Connection refused at 127\.0\.0\.1:9"):
            await prompting.prompt(client, "http://127.0.0.1:9", PromptRequest(prompt="hi"))


async def test_other_400s_are_not_retried_and_carry_the_services_words() -> None:
    app = FastAPI()
    calls: list[str] = []

    @app.get("/v1/models")
    async def models() -> dict:
        return {"data": [{"id": "m"}]}

    @app.post("/v1/chat/completions")
    async def chat() -> JSONResponse:
        calls.append("chat")
        return JSONResponse({"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}},
                            status_code=400)

    @app.post("/v1/completions")
    async def completions() -> dict:
        calls.append("completions")
        return {}

    async with client_for(app) as client:
        with pytest.raises(prompting.UpstreamError) as err:
            await prompting.prompt(client, ENDPOINT, PromptRequest(prompt="hi"))
    assert (err.value.status, str(err.value)) == (400, "max_tokens is too large")
    assert calls == ["chat"]


async def test_a_service_listing_no_model_is_an_upstream_error() -> None:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": []}

    async with client_for(app) as client:
        with pytest.raises(prompting.UpstreamError, match="lists no model"):
            await prompting.prompt(client, ENDPOINT, PromptRequest(prompt="hi"))


async def test_list_models_returns_the_entries() -> None:
    async with client_for(create_app("demo")) as client:
        data = await prompting.list_models(client, ENDPOINT + "/")
    assert [m["id"] for m in data] == ["demo"]


async def test_the_default_model_is_asked_once_per_endpoint_not_per_prompt() -> None:
    app = create_app("demo")
    asked: list[str] = []

    @app.middleware("http")
    async def record(request, call_next):
        asked.append(request.url.path)
        return await call_next(request)

    async with client_for(app) as client:
        for _ in range(3):
            await prompting.prompt(client, ENDPOINT, PromptRequest(prompt="hi"), job="uid-1/7")
        await prompting.prompt(client, "http://other.test:9000", PromptRequest(prompt="hi"), job="uid-1/7")
        await prompting.prompt(client, ENDPOINT, PromptRequest(prompt="hi"), job="uid-2/8")  # a new job, old port
    assert asked.count("/v1/models") == 3 and asked.count("/v1/chat/completions") == 5
