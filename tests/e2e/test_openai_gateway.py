"""One OpenAI endpoint for every model, on the real stack, with the official `openai` client: routing by model,
streaming passed through as it comes, the demo's real model. (On demand, idle shutdown and limits: test_on_demand.)"""

from __future__ import annotations

import subprocess
import time

import openai
import pytest

MADE_KEYS: list[str] = []
SLOW = 0.4  # seconds the test double sleeps before each streamed chunk after the first


def client(stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0, timeout=120)


def running(stack, name: str, timeout: float = 180) -> dict:
    return stack.wait_for(name, lambda o: (o.get("status") or {}).get("phase") == "running", timeout,
                          what="running")


def scontrol(stack, *args: str) -> None:
    subprocess.run(["scontrol", *args], env={**stack.slurm.env(), "PATH": "/usr/bin:/bin"}, check=True)


@pytest.fixture(scope="module")
def inference_key(stack) -> str:
    key = stack.make_key("default", "inference")
    MADE_KEYS.append(key)
    return key


@pytest.fixture(scope="module")
def gateway_services(stack):
    """A slow-streaming echo service and the demo's real embeddings model, for the whole module."""
    suffix = str(int(time.time()) % 100000)
    names = {"echo": f"gw-echo-{suffix}", "emb": f"gw-emb-{suffix}"}
    stack.apply(stack.manifest(names["echo"], "testing/openai-echo", {"OPENAI_TEST_CHUNK_DELAY": str(SLOW)}))
    stack.apply(stack.manifest(names["emb"], "embeddings/minilm"))
    try:
        for name in names.values():
            running(stack, name, 300)
        yield names
    finally:
        for name in names.values():
            stack.kubectl("delete", "ais", name, "--wait=false", "--ignore-not-found", check=False)
        for name in names.values():
            stack.wait_gone(name, 90)


def test_models_chat_and_unknown_model_with_the_openai_client(stack, inference_key, gateway_services):
    ai = client(stack, inference_key)
    ids = {m.id for m in ai.models.list()}
    assert {gateway_services["echo"], gateway_services["emb"]} <= ids
    assert ai.models.retrieve(gateway_services["echo"]).owned_by == "default"
    chat = ai.chat.completions.create(model=gateway_services["echo"], max_tokens=20,
                                      messages=[{"role": "user", "content": "hello through the gateway"}])
    assert chat.choices[0].message.content == "echo: hello through the gateway"
    assert chat.usage.prompt_tokens == 4
    # The id the service itself serves routes to it too.
    served = stack.get(gateway_services["echo"])["status"]["models"]
    assert served == ["aifactory-echo-test"]
    assert ai.chat.completions.create(model=served[0], messages=[{"role": "user", "content": "x"}]).choices
    with pytest.raises(openai.NotFoundError) as missing:
        ai.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        client(stack, "aif_000000000000_wrong").models.list()


def test_a_stream_arrives_chunk_by_chunk_before_the_upstream_has_finished(stack, inference_key,
                                                                         gateway_services):
    ai = client(stack, inference_key)
    words = "one two three four five six"
    started = time.monotonic()
    arrivals: list[tuple[float, str]] = []
    stream = ai.chat.completions.create(model=gateway_services["echo"], stream=True,
                                        stream_options={"include_usage": True},
                                        messages=[{"role": "user", "content": words}])
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append((time.monotonic() - started, chunk.choices[0].delta.content))
        usage = chunk.usage or usage
    assert "".join(text for _, text in arrivals) == f"echo: {words}"
    # The upstream sleeps SLOW s before each of its 9 chunks after the first: a buffering proxy would hand
    # them all over at the end. Here the first word came long before the last.
    assert arrivals[-1][0] - arrivals[0][0] >= 5 * SLOW
    assert usage is not None and usage.completion_tokens == 7
    # Counted per key, visible through the key's own listing.
    time.sleep(0.5)
    metrics = stack.api().get("/metrics").text
    assert f'aifactory_gateway_tokens_total{{namespace="default",service="{gateway_services["echo"]}",' \
           'kind="completion"}' in metrics


def test_embeddings_from_the_demos_real_model_by_name(stack, inference_key, gateway_services):
    ai = client(stack, inference_key)
    answer = ai.embeddings.create(model=gateway_services["emb"], input=["hello world", "bonjour le monde"])
    assert [len(d.embedding) for d in answer.data] == [384, 384]

