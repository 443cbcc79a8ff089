"""Identity and tenancy on the real stack: two tenants with their own keys and Slurm accounts, roles, revocation,
expiry, both header forms, Secret-sourced environment values. The REST API is the stack's own process."""

from __future__ import annotations

import base64
import json
import subprocess
import time

import httpx
import pytest

from aifactory.devstack import stack as devstack

TENANTS = {"tenant-a": "acct-a", "tenant-b": "acct-b"}
RECIPE = "testing/openai-echo"
# Made in this module; the last module of the session checks that none of them is stored or logged anywhere.
MADE_KEYS: list[str] = []


@pytest.fixture(scope="module")
def tenants(stack) -> dict[str, str]:
    """Two tenants (namespaces with Tenant resources and their Slurm accounts) and a management key each, made
    by the stack's admin through POST /api/api-keys."""
    keys = {}
    with stack.api() as admin:
        for name, account in TENANTS.items():
            stack.ensure_namespace(name)
            stack.kubectl("apply", "-f", "-", stdin=json.dumps({
                "apiVersion": "aifactory.io/v1alpha1", "kind": "Tenant", "metadata": {"name": name},
                "spec": {"slurm": {"account": account}, "quotas": {"maxRunningServices": 5}}}))
            deadline = time.monotonic() + 10
            while True:  # the API's watch brings the new Tenant within moments
                made = admin.post("/api/api-keys", json={"name": f"{name} manager", "tenant": name})
                if made.status_code != 404 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert made.status_code == 201, made.text
            keys[name] = made.json()["key"]
            MADE_KEYS.append(keys[name])
    yield keys
    for name in TENANTS:
        stack.kubectl("delete", "aiservices,apikeys", "--all", "-n", name, "--wait=false", check=False)


def wait_for_job(client: httpx.Client, service_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/api/v1/services/{service_id}/status").json()
        if status.get("job_id"):
            return status
        assert status.get("status") == "pending" and time.monotonic() < deadline, status
        time.sleep(0.5)


def squeue_account(stack, job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%a"], env={**stack.slurm.env(), "PATH": "/usr/bin"},
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def test_tenants_see_only_their_own_services_whose_jobs_run_under_their_accounts(stack, tenants) -> None:
    a = stack.api(tenants["tenant-a"])
    b = stack.api(tenants["tenant-b"])
    made = {}
    for name, client in (("tenant-a", a), ("tenant-b", b)):
        r = client.post("/api/v1/services", json={"recipe_name": RECIPE})
        assert r.status_code == 201, r.text
        assert r.json()["namespace"] == name
        made[name] = r.json()["id"]
    jobs = {name: wait_for_job(client, made[name])["job_id"] for name, client in (("tenant-a", a), ("tenant-b", b))}
    for name, job_id in jobs.items():
        assert squeue_account(stack, job_id) == TENANTS[name], f"{name}'s job {job_id} is not under its account"

    # Each sees its own, and the other's does not exist: by name, by job id, for every verb.
    assert [s["id"] for s in a.get("/api/v1/services").json()] == [made["tenant-a"]]
    assert [s["id"] for s in b.get("/api/v1/services").json()] == [made["tenant-b"]]
    theirs, their_job = made["tenant-b"], jobs["tenant-b"]
    for method, path in (("GET", f"/api/v1/services/{theirs}"), ("GET", f"/api/v1/services/{their_job}"),
                         ("GET", f"/api/v1/services/{theirs}/status"), ("GET", f"/api/v1/services/{theirs}/logs"),
                         ("DELETE", f"/api/v1/services/{theirs}")):
        r = a.request(method, path)
        assert (r.status_code, r.json()) == (404, {"detail": "Service not found"}), (method, path)
    assert stack.get(theirs, "tenant-b") is not None  # still there after A's DELETE

    # The stack's admin sees both tenants.
    with stack.api() as admin:
        everything = {s["id"] for s in admin.get("/api/v1/services").json()}
    assert set(made.values()) <= everything

    for name, client in (("tenant-a", a), ("tenant-b", b)):
        assert client.delete(f"/api/v1/services/{made[name]}").status_code == 200
    for name in made:
        stack.wait_gone(made[name], 60, namespace=name)
    a.close()
    b.close()


def test_an_inference_key_is_403_on_management_paths_and_both_header_forms_work(stack, tenants) -> None:
    with stack.api(tenants["tenant-a"]) as manager:
        made = manager.post("/api/api-keys", json={"name": "notebook", "role": "inference"})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    MADE_KEYS.append(key)
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        for method, path in (("GET", "/api/v1/services"), ("POST", "/api/v1/services"), ("GET", "/api/v1/recipes"),
                             ("GET", "/api/api-keys")):
            r = httpx.request(method, f"{stack.api_url}{path}", headers=headers, json={"recipe_name": RECIPE},
                              timeout=30)
            assert r.status_code == 403, (headers.keys(), method, path, r.status_code)
            assert "needs management" in r.json()["detail"]
        who = httpx.get(f"{stack.api_url}/api/auth/whoami", headers=headers, timeout=30).json()
        assert (who["tenant"], who["role"]) == ("tenant-a", "inference")
        assert httpx.get(f"{stack.api_url}/api/v1/vllm/services", headers=headers, timeout=30).status_code == 200


def test_a_revoked_key_is_401_at_once_and_an_expired_key_once_its_time_passed(stack, tenants) -> None:
    with stack.api(tenants["tenant-a"]) as manager:
        doomed = manager.post("/api/api-keys", json={"name": "doomed"}).json()
        soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3))
        brief = manager.post("/api/api-keys", json={"name": "brief", "expires_at": soon}).json()
        MADE_KEYS.extend([doomed["key"], brief["key"]])
        with stack.api(doomed["key"]) as client:
            assert client.get("/api/v1/services").status_code == 200
            assert manager.delete(f"/api/api-keys/{doomed['id']}").status_code == 204
            r = client.get("/api/v1/services")  # the very next request
            assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
            assert "POST /api/api-keys" in r.json()["detail"]
        listed = [k["id"] for k in manager.get("/api/api-keys").json()["items"]]
        assert doomed["id"] not in listed and brief["id"] in listed

    with stack.api(brief["key"]) as client:
        assert client.get("/api/v1/services").status_code == 200
        time.sleep(max(0.0, time.mktime(time.strptime(soon, "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(time.gmtime()) + 1))
        r = client.get("/api/v1/services")
        assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_a_key_revoked_with_kubectl_stops_working_as_soon_as_the_api_watches_it_go(stack, tenants) -> None:
    key = stack.make_key("tenant-a", "management")
    MADE_KEYS.append(key)
    key_id = key.split("_")[1]
    with stack.api(key) as client:
        deadline = time.monotonic() + 10
        while client.get("/api/v1/services").status_code != 200:  # the watch brings the new key
            assert time.monotonic() < deadline, "a key made with kubectl never worked"
            time.sleep(0.05)
        stack.kubectl("delete", "apikey", key_id, "-n", "tenant-a")
        deleted = time.monotonic()
        while client.get("/api/v1/services").status_code != 401:
            assert time.monotonic() - deleted < 10, "a key deleted with kubectl still works"
            time.sleep(0.02)
    print(f"revocation through kubectl took effect {time.monotonic() - deleted:.3f}s after the delete returned")


def test_a_secret_sourced_env_value_reaches_the_process_byte_for_byte_and_no_response(stack, tenants, services,
                                                                                        unique_name) -> None:
    value = "s3cr3t 'quoted' \"double\" $(id) `uname` ; \\ tab\there"
    secret = unique_name("model-secret")
    stack.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": "tenant-a"},
        "data": {"model": base64.b64encode(value.encode()).decode()}}))
    name = services(unique_name("secret-env"), RECIPE, namespace="tenant-a",
                    secretEnv={"OPENAI_TEST_MODEL": {"name": secret, "key": "model"}})
    obj = stack.wait_for(name, lambda o: (o.get("status") or {}).get("phase") == "running", 180,
                         namespace="tenant-a", what="running")
    # The echo double reports the model it was told: the Secret's value, exactly.
    models = httpx.get(f"{obj['status']['endpoint']}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [value]

    with stack.api(tenants["tenant-a"]) as owner, stack.api() as admin:
        answers = [owner.get(f"/api/v1/services/{name}"), owner.get(f"/api/v1/services/{name}/status"),
                   owner.get("/api/v1/services"), admin.get("/api/v1/services")]
    assert all(r.status_code == 200 for r in answers)
    for text in [r.text for r in answers] + [json.dumps(obj),
                                               stack.kubectl("get", "events", "-n", "tenant-a", "-o", "json").stdout,
                                               devstack.OPERATOR.log_file.read_text(errors="replace"),
                                               devstack.API.log_file.read_text(errors="replace")]:
        assert value not in text


def test_a_missing_secret_keeps_the_service_pending_and_says_which(stack, tenants, services, unique_name) -> None:
    name = services(unique_name("no-secret"), RECIPE, namespace="tenant-a",
                    secretEnv={"HF_TOKEN": {"name": "does-not-exist", "key": "token"}})
    status = stack.wait_for(name, lambda o: (o.get("status") or {}).get("message"), 60, namespace="tenant-a",
                            what="a message")["status"]
    assert status["phase"] == "pending" and "Secret tenant-a/does-not-exist not found" in status["message"]
    assert not status.get("jobId")
