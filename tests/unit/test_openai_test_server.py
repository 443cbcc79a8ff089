"""The OpenAI-compatible chat test double."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from aifactory.servers.openai_test_server import CHAT_TEMPLATE_ERROR, DEFAULT_MODEL, create_app

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app("demo-model"))


def chat(client: TestClient, **body) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hello big world"}],
                                                     **body})


def assert_vllm_error(r: httpx.Response, status: int, type_: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body == {"object": "error", "message": body["message"], "type": type_, "param": None, "code": status}
    return body


def test_health_and_models(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "model": "demo-model"}
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    [m] = body["data"]
    assert m["id"] == "demo-model" and m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"]


def test_default_model_name() -> None:
    assert TestClient(create_app()).get("/v1/models").json()["data"][0]["id"] == DEFAULT_MODEL


def test_chat_echoes_last_user_message(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={"model": "demo-model", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "hello big world"}]},
    ]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "demo-model" and body["id"].startswith("chatcmpl-")
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "echo: hello big world"}
    assert choice["finish_reason"] == "stop"
    # Prompt tokens: words of all messages (2 + 2 + 2 + 3); completion: "echo:" + 3 words.
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


def test_chat_is_deterministic(client: TestClient) -> None:
    assert chat(client).json()["choices"] == chat(client).json()["choices"]


def test_chat_max_tokens_truncates(client: TestClient) -> None:
    body = chat(client, max_tokens=2).json()
    assert body["choices"][0]["message"]["content"] == "echo: hello"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2
    body = chat(client, max_completion_tokens=3).json()
    assert body["choices"][0]["message"]["content"] == "echo: hello big"


def test_ignore_eos_gives_exactly_max_tokens(client: TestClient) -> None:
    body = chat(client, max_tokens=10, ignore_eos=True).json()
    assert len(body["choices"][0]["message"]["content"].split()) == 10
    assert body["usage"]["completion_tokens"] == 10 and body["choices"][0]["finish_reason"] == "length"


def test_chat_stream(client: TestClient) -> None:
    r = chat(client, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "echo: hello big world"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_completions(client: TestClient) -> None:
    r = client.post("/v1/completions", json={"model": "demo-model", "prompt": "one two three", "max_tokens": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"] == [{"index": 0, "text": "echo: one two", "logprobs": None, "finish_reason": "length"}]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


def test_completions_batch_and_default_max_tokens(client: TestClient) -> None:
    long = " ".join(f"w{i}" for i in range(40))
    body = client.post("/v1/completions", json={"prompt": ["short one", long]}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][0]["text"] == "echo: short one" and body["choices"][0]["finish_reason"] == "stop"
    assert len(body["choices"][1]["text"].split()) == 16  # OpenAI's default max_tokens
    assert body["usage"] == {"prompt_tokens": 42, "completion_tokens": 19, "total_tokens": 61}


def test_completions_stream(client: TestClient) -> None:
    r = client.post("/v1/completions", json={"prompt": "a b", "stream": True})
    events = [line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "echo: a b"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_no_chat_template_is_vllm_400() -> None:
    c = TestClient(create_app("demo-model", chat_template=False))
    body = assert_vllm_error(chat(c), 400, "BadRequestError")
    assert "chat template" in body["message"] and body["message"] == CHAT_TEMPLATE_ERROR
    # Plain completions need no template and still work.
    assert c.post("/v1/completions", json={"prompt": "hi"}).status_code == 200


def test_unknown_model_is_404(client: TestClient) -> None:
    body = assert_vllm_error(chat(client, model="gpt-4"), 404, "NotFoundError")
    assert "gpt-4" in body["message"]
    assert_vllm_error(client.post("/v1/completions", json={"model": "gpt-4", "prompt": "x"}), 404, "NotFoundError")


@pytest.mark.parametrize("body", [{}, {"messages": []}, {"messages": [{"content": "no role"}]},
                                  {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}])
def test_bad_chat_request_is_400(client: TestClient, body: dict) -> None:
    assert_vllm_error(client.post("/v1/chat/completions", json=body), 400, "BadRequestError")


def test_startup_delay_503_then_200() -> None:
    now = [100.0]  # a fake clock: the test steps time instead of sleeping
    c = TestClient(create_app("demo-model", startup_delay=5.0, clock=lambda: now[0]))
    r = c.get("/health")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    assert_vllm_error(chat(c), 503, "ServiceUnavailableError")
    assert c.get("/v1/models").status_code == 503
    now[0] += 4.9
    assert c.get("/health").status_code == 503
    now[0] += 0.2
    assert c.get("/health").status_code == 200
    assert chat(c).status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_process_with_flags(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aifactory.servers.openai_test_server", "--host", "127.0.0.1",
             "--port", str(port), "--model", "m1", "--no-chat-template", "--startup-delay", "1.5"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            statuses: list[int] = []
            deadline = time.monotonic() + 60
            while not statuses or statuses[-1] != 200:
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                try:
                    statuses.append(http.get("/health").status_code)
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(0.05)
            assert 503 in statuses  # the delay was seen before the server turned healthy
            r = http.post("/v1/chat/completions", json={"model": "m1", "messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 400 and "chat template" in r.json()["message"]
            r = http.post("/v1/completions", json={"model": "m1", "prompt": "x y"})
            assert r.json()["choices"][0]["text"] == "echo: x y"
    finally:
        # Stop exactly the process this test started, by its pid.
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_paced_stream_sleeps_between_chunks_and_says_the_same() -> None:
    import time as clock

    paced = TestClient(create_app("m", chunk_delay=0.05))
    started = clock.monotonic()
    with paced.stream("POST", "/v1/chat/completions", json={"stream": True, "messages": [
            {"role": "user", "content": "a b"}]}) as answer:
        text = "".join(answer.iter_text())
    assert clock.monotonic() - started >= 0.05 * 4  # five chunks after the first one
    assert text.count("data: ") == 6 and text.endswith("data: [DONE]\n\n")
