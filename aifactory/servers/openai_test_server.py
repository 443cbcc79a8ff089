"""TEST DOUBLE: an OpenAI-compatible chat server with no model behind it.

It stands in for vLLM where a real language model cannot run (tests, CI, benchmarks
of the control plane): it speaks the same HTTP API and the same error shapes, and
answers at once with deterministic text. It is not an AI service.

Run:
    python -m aifactory.servers.openai_test_server --port 8000 \
        [--model NAME] [--no-chat-template] [--startup-delay SECONDS] [--chunk-delay SECONDS]

Behaviour:
  * The reply is "echo:" followed by the prompt's words (for chat: the last user
    message), cut to max_tokens words; finish_reason is "length" when cut, else "stop".
    With vLLM's `ignore_eos: true` the words repeat until exactly max_tokens, which
    gives benchmarks a fixed output length.
  * A token is a whitespace-separated word; usage counts exactly those.
  * `stream: true` sends server-sent events, one word per chunk, then `data: [DONE]`.
  * --no-chat-template: /v1/chat/completions answers 400 like vLLM serving a model
    whose tokenizer has no chat template; /v1/completions still works.
  * --startup-delay S: for S seconds after start, /health and the /v1 endpoints answer
    503, as a real server does while it loads its weights.
  * --chunk-delay S: a stream sleeps S seconds before each chunk after the first, like a model generating
    tokens (a client can see chunks arrive before the answer is complete).
  * Errors use vLLM's shape: {"object": "error", "message", "type", "param", "code"}.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MODEL = "aifactory-echo-test"
# vLLM's own wording (transformers >= 4.44) when a tokenizer defines no chat template.
CHAT_TEMPLATE_ERROR = ("As of transformers v4.44, default chat template is no longer allowed, so you must "
                       "provide a chat template if the tokenizer does not define one.")
ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 503: "ServiceUnavailableError"}

log = logging.getLogger("aifactory.servers.openai_test_server")


def vllm_error(status: int, message: str) -> JSONResponse:
    body = {"object": "error", "message": message, "type": ERROR_TYPES.get(status, "InternalServerError"),
            "param": None, "code": status}
    return JSONResponse(status_code=status, content=body)


def words(text: str) -> list[str]:
    """The test double's tokenizer: whitespace-separated words."""
    return text.split()


def reply_words(prompt: str, max_tokens: int | None, ignore_eos: bool) -> tuple[list[str], str]:
    """The deterministic reply to a prompt, as words, and its finish_reason."""
    out = ["echo:", *words(prompt)]
    if max_tokens is None:
        return out, "stop"
    if ignore_eos and len(out) < max_tokens:
        out = list(itertools.islice(itertools.cycle(out), max_tokens))
    if len(out) > max_tokens:
        return out[:max_tokens], "length"
    return out, "length" if ignore_eos else "stop"


class _Request(BaseModel):
    # Sampling parameters (temperature, top_p, seed, ...) are accepted and ignored.
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    ignore_eos: bool = False  # a vLLM extension


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: only text parts count
            return " ".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's and vLLM's default for completions


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def create_app(model: str = DEFAULT_MODEL, *, chat_template: bool = True, startup_delay: float = 0.0,
               chunk_delay: float = 0.0, clock: Callable[[], float] = time.monotonic) -> FastAPI:
    """Build the app. `clock` is injectable so tests can step through the start-up delay without sleeping."""
    ready_at = clock() + startup_delay
    created = int(time.time())
    ids = itertools.count(1)
    app = FastAPI(title="aifactory OpenAI test double")

    def loading() -> bool:
        return clock() < ready_at

    def check(req: _Request) -> JSONResponse | None:
        """The checks every /v1 call shares, in vLLM's order."""
        if loading():
            return vllm_error(503, "The server is starting up.")
        if req.model is not None and req.model != model:
            return vllm_error(404, f"The model `{req.model}` does not exist.")
        return None

    def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return vllm_error(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}")

    @app.get("/health")
    async def health() -> JSONResponse:
        if loading():
            return JSONResponse({"status": "loading", "model": model}, status_code=503)
        return JSONResponse({"status": "ok", "model": model})

    @app.get("/v1/models")
    async def models() -> Any:
        if loading():
            return vllm_error(503, "The server is starting up.")
        return {"object": "list",
                "data": [{"id": model, "object": "model", "created": created, "owned_by": "aifactory-test"}]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest) -> Any:
        if (err := check(req)) is not None:
            return err
        if not chat_template:
            return vllm_error(400, CHAT_TEMPLATE_ERROR)
        prompt_tokens = sum(len(words(m.text())) for m in req.messages)
        last_user = next((m.text() for m in reversed(req.messages) if m.role == "user"), "")
        out, finish = reply_words(last_user, req.max_completion_tokens or req.max_tokens, req.ignore_eos)
        rid, name = f"chatcmpl-{next(ids)}", req.model or model
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(_paced(_chat_stream(rid, name, out, finish, usage(prompt_tokens, len(out)),
                                                         include_usage)), media_type="text/event-stream")
        return {
            "id": rid, "object": "chat.completion", "created": int(time.time()), "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(out)},
                         "logprobs": None, "finish_reason": finish}],
            "usage": usage(prompt_tokens, len(out)),
        }

    async def _paced(chunks: Iterator[str]) -> AsyncIterator[str]:
        for i, chunk in enumerate(chunks):
            if i and chunk_delay:
                await asyncio.sleep(chunk_delay)
            yield chunk

    def _chat_stream(rid: str, name: str, out: list[str], finish: str, use: dict[str, int],
                     include_usage: bool) -> Iterator[str]:
        head = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": name}
        yield _sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "finish_reason": None}]})
        for i, w in enumerate(out):
            yield _sse({**head, "choices": [{"index": 0, "delta": {"content": w if i == 0 else " " + w},
                                             "finish_reason": None}]})
        yield _sse({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if include_usage:
            yield _sse({**head, "choices": [], "usage": use})
        yield "data: [DONE]\n\n"

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest) -> Any:
        if (err := check(req)) is not None:
            return err
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            return vllm_error(400, "prompt: must not be empty")
        replies = [reply_words(p, req.max_tokens, req.ignore_eos) for p in prompts]
        use = usage(sum(len(words(p)) for p in prompts), sum(len(out) for out, _ in replies))
        rid, name = f"cmpl-{next(ids)}", req.model or model
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(_paced(_completion_stream(rid, name, replies, use, include_usage)),
                                     media_type="text/event-stream")
        return {
            "id": rid, "object": "text_completion", "created": int(time.time()), "model": name,
            "choices": [{"index": i, "text": " ".join(out), "logprobs": None, "finish_reason": finish}
                        for i, (out, finish) in enumerate(replies)],
            "usage": use,
        }

    def _completion_stream(rid: str, name: str, replies: list[tuple[list[str], str]], use: dict[str, int],
                           include_usage: bool) -> Iterator[str]:
        head = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": name}
        for index, (out, finish) in enumerate(replies):
            for i, w in enumerate(out):
                last = i == len(out) - 1
                yield _sse({**head, "choices": [{"index": index, "text": w if i == 0 else " " + w,
                                                 "logprobs": None, "finish_reason": finish if last else None}]})
        if include_usage:
            yield _sse({**head, "choices": [], "usage": use})
        yield "data: [DONE]\n\n"

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aifactory.servers.openai_test_server",
                                     description="Test double: an OpenAI-compatible chat server with no model.")
    # HOST/PORT from the environment are only defaults: the command line always wins.
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    # The OPENAI_TEST_* variables let a recipe (testing/openai-echo) switch behaviours through the service's env.
    parser.add_argument("--model", default=os.environ.get("OPENAI_TEST_MODEL", DEFAULT_MODEL),
                        help="the model name served (default: %(default)s)")
    parser.add_argument("--no-chat-template", action="store_true",
                        default=os.environ.get("OPENAI_TEST_NO_CHAT_TEMPLATE", "") not in ("", "0", "false"),
                        help="answer chat requests 400 as vLLM does for a tokenizer without a chat template")
    parser.add_argument("--startup-delay", type=float, metavar="SECONDS",
                        default=float(os.environ.get("OPENAI_TEST_STARTUP_DELAY", "0") or 0),
                        help="answer 503 for this long after start, like a model that loads slowly")
    parser.add_argument("--chunk-delay", type=float, metavar="SECONDS",
                        default=float(os.environ.get("OPENAI_TEST_CHUNK_DELAY", "0") or 0),
                        help="in a stream, sleep this long before each chunk after the first")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: it slows benchmarks)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("OpenAI test double serving model %s on %s:%d (chat template: %s, startup delay: %.1fs)",
             args.model, args.host, args.port, "no" if args.no_chat_template else "yes", args.startup_delay)
    app = create_app(args.model, chat_template=not args.no_chat_template, startup_delay=args.startup_delay,
                     chunk_delay=args.chunk_delay)
    uvicorn.run(app, host=args.host, port=args.port, access_log=args.access_log, log_level="info")


if __name__ == "__main__":
    main()
