"""OpenAI's face over the real app and Store (in memory) and the OpenAI test double as the service."""

from __future__ import annotations

from aifactory.api.gateway import usage_in

from aifactory.lifecycle import ACTION_ANNOTATION
from tests.unit.api.memory import fresh_default_models, make_api  # noqa: F401

RUNNING = {"phase": "running", "jobId": "11", "endpoint": "http://node1:8000", "models": ["demo"]}


def service(api, name, namespace="team-a", spec=None, **status):
    obj = api.store._stamp({"metadata": {"name": name, "namespace": namespace},
                            "spec": {"recipe": "testing/openai-echo", **(spec or {})}, "status": status})
    api.store.services.put(obj)
    return obj


def chat(api, key, model="echo", **extra):
    return api.client.post("/v1/chat/completions", headers=api.as_key(key),
                           json={"model": model, "messages": [{"role": "user", "content": "hello there"}], **extra})


def test_models_lists_the_services_the_key_may_use_in_openais_shape():
    api = make_api()
    service(api, "echo", **RUNNING)
    service(api, "resting", spec={"stopped": True, "onDemand": True}, phase="stopped")
    service(api, "vectors", spec={"recipe": "vector-db/qdrant"}, phase="running")
    service(api, "theirs", namespace="team-b", **RUNNING)
    listed = api.client.get("/v1/models", headers=api.as_key(api.inference)).json()
    assert listed["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in listed["data"]] == [
        ("echo", "model", "team-a"), ("resting", "model", "team-a")]
    assert isinstance(listed["data"][0]["created"], int)


def test_one_model_is_retrieved_by_its_name_as_openai_clients_do():
    api = make_api()
    service(api, "echo", **RUNNING)
    service(api, "vectors", spec={"recipe": "vector-db/qdrant"}, phase="running")
    service(api, "theirs", namespace="team-b", **RUNNING)
    got = api.client.get("/v1/models/echo", headers=api.as_key(api.inference))
    assert got.status_code == 200, got.text
    assert (got.json()["id"], got.json()["object"], got.json()["owned_by"]) == ("echo", "model", "team-a")
    for absent in ("vectors", "theirs", "nothing"):  # not OpenAI, another tenant's, unknown
        missing = api.client.get(f"/v1/models/{absent}", headers=api.as_key(api.inference))
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found", missing.text
    from aifactory.models import Role
    narrow = api.store.add_key("team-a", Role.inference, allowed_models=["other"])
    assert api.client.get("/v1/models/echo", headers=api.as_key(narrow)).status_code == 403


def test_chat_is_routed_by_model_name_or_served_id_and_answered_by_the_service():
    api = make_api()
    service(api, "echo", **RUNNING)
    answer = chat(api, api.inference)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["choices"][0]["message"]["content"] == "echo: hello there"
    assert chat(api, api.inference, model="demo").status_code == 200  # the id the service serves
    state = api.client.app.state.aifactory
    assert state.traffic.services[("team-a", "echo")].requests == 2
    assert state.traffic.services[("team-a", "echo")].prompt_tokens == 4  # "hello there", twice
    assert state.traffic.services[("team-a", "echo")].completion_tokens == 6


def test_a_stream_passes_through_with_its_usage_counted():
    api = make_api()
    service(api, "echo", **RUNNING)
    with api.client.stream("POST", "/v1/chat/completions", headers=api.as_key(api.inference),
                           json={"model": "echo", "stream": True, "stream_options": {"include_usage": True},
                                 "messages": [{"role": "user", "content": "one two three"}]}) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        text = "".join(answer.iter_text())
    assert text.count("data: ") >= 5 and text.rstrip().endswith("data: [DONE]")
    tally = api.client.app.state.aifactory.traffic.services[("team-a", "echo")]
    assert (tally.prompt_tokens, tally.completion_tokens) == (3, 4)


def test_openai_errors_unknown_model_no_model_no_key_and_allowed_models():
    api = make_api()
    service(api, "echo", **RUNNING)
    unknown = chat(api, api.inference, model="nope")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found" and "nope" in unknown.json()["error"]["message"]
    no_model = api.client.post("/v1/chat/completions", headers=api.as_key(api.inference), json={"messages": []})
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    not_json = api.client.post("/v1/embeddings", headers=api.as_key(api.inference), content=b"{")
    assert not_json.status_code == 400 and not_json.json()["error"]["type"] == "invalid_request_error"
    no_key = api.client.post("/v1/chat/completions", json={"model": "echo"})
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
    from aifactory.models import Role
    narrow = api.store.add_key("team-a", Role.inference, allowed_models=["other"])
    denied = chat(api, narrow)
    assert denied.status_code == 403 and "allowed_models" in denied.json()["error"]["message"]
    assert api.client.get("/v1/models", headers=api.as_key(narrow)).json()["data"] == []
    # Another tenant's service does not exist for this key.
    service(api, "theirs", namespace="team-b", **RUNNING)
    assert chat(api, api.inference, model="theirs").status_code == 404


def test_the_clients_key_never_goes_upstream():
    seen = []

    async def upstream(scope, receive, send):
        seen.append(dict(scope["headers"]))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"ok": true, "usage": {"prompt_tokens": 2}}'})

    api = make_api(upstream=upstream)
    service(api, "echo", **RUNNING)
    key = api.inference
    assert api.client.post("/v1/embeddings", headers={**api.as_key(key), "X-API-Key": key, "Cookie": "a=b"},
                           json={"model": "echo", "input": "x"}).json()["ok"] is True
    assert not any(key in v.decode() for v in seen[0].values())
    assert b"authorization" not in seen[0] and b"x-api-key" not in seen[0] and b"cookie" not in seen[0]


def test_a_queued_service_is_held_then_503_with_retry_after_and_where_it_is():
    api = make_api(start_timeout_seconds=0)
    service(api, "echo", phase="pending", jobId="12", pendingReason="JobHeldUser", message="Queued by Slurm: "
            "JobHeldUser")
    answer = chat(api, api.inference)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "7"  # no expected start: the API's setting
    error = answer.json()["error"]
    assert "queued by Slurm (reason: JobHeldUser)" in error["message"]
    assert error["aifactory"] == {"service": "echo", "phase": "pending", "job_id": "12",
                                  "pending_reason": "JobHeldUser", "message": "Queued by Slurm: JobHeldUser"}


def test_retry_after_follows_slurms_expected_start_and_the_recipes_grace():
    import time

    from aifactory.lifecycle import rfc3339
    api = make_api(start_timeout_seconds=0)
    service(api, "later", phase="pending", jobId="13", expectedStart=rfc3339(time.time() + 600))
    assert 590 <= int(chat(api, api.inference, model="later").headers["retry-after"]) <= 600
    service(api, "loading", phase="starting", jobId="14")
    assert chat(api, api.inference, model="loading").headers["retry-after"] == "120"  # openai-echo's grace


def test_a_stopped_service_is_503_unless_on_demand_which_a_request_starts():
    api = make_api(start_timeout_seconds=0)
    service(api, "off", phase="stopped", jobId="15")
    answer = chat(api, api.inference, model="off")
    assert answer.status_code == 503 and "retry-after" not in answer.headers
    assert "does not start on demand" in answer.json()["error"]["message"]
    service(api, "lazy", spec={"onDemand": True, "stopped": True}, phase="stopped")
    answer = chat(api, api.inference, model="lazy")
    assert answer.status_code == 503 and answer.headers["retry-after"]
    woken = api.store.service("team-a", "lazy")
    assert woken["metadata"]["annotations"][ACTION_ANNOTATION].startswith("start@")
    assert woken["spec"]["stopped"] is True  # the spec stays as GitOps wrote it


def test_over_the_tenants_limit_409_names_it_and_eviction_stops_the_least_recently_used_idle_service():
    api = make_api(start_timeout_seconds=0)
    api.store.add_tenant("team-a", quotas={"maxRunningServices": 2})
    service(api, "busy", spec={"onDemand": True}, **RUNNING)
    service(api, "old", spec={"onDemand": True}, **{**RUNNING, "lastRequest": "2026-01-01T00:00:00Z"})
    service(api, "lazy", spec={"onDemand": True}, phase="stopped")
    refused = chat(api, api.inference, model="lazy")
    assert refused.status_code == 409
    assert "tenant team-a may run 2 services at once" in refused.json()["error"]["message"]
    api.store.add_tenant("team-a", quotas={"maxRunningServices": 2, "evictLeastRecentlyUsed": True})
    api.client.app.state.aifactory.traffic.begin(("team-a", "busy"))  # a request in flight: not idle
    assert chat(api, api.inference, model="lazy").status_code == 503  # started, not ready within 0 s
    assert api.store.service("team-a", "old")["metadata"]["annotations"][ACTION_ANNOTATION].startswith("evict@")
    assert "annotations" not in api.store.service("team-a", "busy")["metadata"]


def test_the_api_wide_limit_counts_every_tenant():
    api = make_api(start_timeout_seconds=0, max_running_services=1)
    service(api, "theirs", namespace="team-b", **RUNNING)
    service(api, "lazy", spec={"onDemand": True}, phase="stopped")
    refused = chat(api, api.inference, model="lazy")
    assert refused.status_code == 409 and "at most 1 services may run at once in all" in refused.text


def test_usage_is_read_from_the_end_of_an_answer():
    assert usage_in(b'{"x": 1, "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}') == (3, 5)
    stream = (b'data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}\n\n'
              b'data: [DONE]\n\n')
    assert usage_in(stream) == (7, 2)
    assert usage_in(b'{"usage": null}') is None and usage_in(b"data: [DONE]") is None
    assert usage_in(b'{"usage": {"prompt_tokens": 4, "total_tokens": 4}}') == (4, 0)  # embeddings


def test_token_usage_is_visible_per_key_and_in_metrics():
    api = make_api()
    service(api, "echo", **RUNNING)
    assert chat(api, api.inference).status_code == 200
    keys = api.client.get("/api/api-keys", headers=api.as_key(api.admin)).json()["items"]
    used = [k for k in keys if k["role"] == "inference"][0]
    assert used["usage"] == {"requests": 1, "promptTokens": 2, "completionTokens": 3}
    metrics = api.client.get("/metrics", headers=api.as_key(api.admin)).text
    assert 'aifactory_gateway_tokens_total{namespace="team-a",service="echo",kind="completion"} 3' in metrics
    assert f'aifactory_gateway_key_tokens_total{{tenant="team-a",key="{used["id"]}",kind="prompt"}} 2' in metrics
