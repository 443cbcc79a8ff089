"""Identity over HTTP in process: keys shown once and listed by prefix, roles, users, sign-in, tenants."""

from __future__ import annotations

import json

from aifactory.api.identity.keys import key_hash
from tests.unit.api.memory import fresh_default_models, make_api  # noqa: F401


def test_a_key_is_shown_once_stored_as_a_hash_and_works_with_both_headers() -> None:
    api = make_api()
    r = api.client.post("/api/api-keys", headers=api.as_key(api.manager),
                        json={"name": "notebook", "role": "inference", "allowed_models": ["echo-1"]})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["key"].startswith("aif_") and made["prefix"] == made["key"][:16]
    assert (made["tenant"], made["role"], made["allowed_models"]) == ("team-a", "inference", ["echo-1"])
    stored = api.store.keys.named(made["id"])
    assert stored["spec"]["keyHash"] == key_hash(made["key"]) and made["key"] not in json.dumps(stored)
    listed = api.client.get("/api/api-keys", headers={"X-API-Key": api.manager}).json()["items"]
    assert made["id"] in [k["id"] for k in listed] and made["key"] not in json.dumps(listed)
    assert {k["tenant"] for k in listed} == {"team-a"}  # a manager sees its own tenant's keys only
    mine = api.client.get("/api/auth/whoami", headers={"X-API-Key": made["key"]}).json()
    assert mine == {"tenant": "team-a", "role": "inference", "key_id": made["id"], "user_id": None,
                    "allowed_models": ["echo-1"]}
    assert api.client.get("/api/auth/whoami", headers=api.as_key(made["key"])).status_code == 200


def test_revoking_a_key_makes_it_401_with_www_authenticate() -> None:
    api = make_api()
    made = api.client.post("/api/api-keys", headers=api.as_key(api.manager), json={"name": "x"}).json()
    assert made["role"] == "management"
    r = api.client.delete(f"/api/api-keys/{made['id']}", headers=api.as_key(api.manager))
    assert r.status_code == 204 and r.content == b""
    r = api.client.get("/api/v1/services", headers=api.as_key(made["key"]))
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "POST /api/api-keys" in r.json()["detail"] and made["key"] not in r.text


def test_a_key_cannot_make_a_stronger_one_nor_one_for_another_tenant() -> None:
    api = make_api()
    h = api.as_key(api.manager)
    assert api.client.post("/api/api-keys", headers=h, json={"name": "x", "role": "admin"}).status_code == 403
    assert api.client.post("/api/api-keys", headers=h, json={"name": "x", "tenant": "default"}).status_code == 403
    assert api.client.post("/api/api-keys", headers=api.as_key(api.inference), json={"name": "x"}).status_code == 403
    r = api.client.post("/api/api-keys", headers=api.as_key(api.admin),
                        json={"name": "x", "tenant": "nowhere"})
    assert r.status_code == 404 and "Tenant nowhere" in r.json()["detail"]
    r = api.client.post("/api/api-keys", headers=api.as_key(api.admin),
                        json={"name": "for a", "tenant": "team-a", "role": "admin"})
    assert r.status_code == 201 and r.json()["tenant"] == "team-a"


def test_another_tenants_key_is_404_to_delete_and_expired_keys_are_refused() -> None:
    api = make_api()
    theirs = api.client.post("/api/api-keys", headers=api.as_key(api.admin), json={"name": "admins"}).json()
    assert api.client.delete(f"/api/api-keys/{theirs['id']}", headers=api.as_key(api.manager)).status_code == 404
    r = api.client.post("/api/api-keys", headers=api.as_key(api.admin),
                        json={"name": "old", "expires_at": "2001-01-01T00:00:00Z"})
    assert r.status_code == 400 and "past" in r.json()["detail"]
    r = api.client.post("/api/api-keys", headers=api.as_key(api.admin), json={"name": "x", "expires_at": "soon"})
    assert r.status_code == 422


def test_users_are_for_admins_passwords_never_come_back_and_sign_in_gives_a_key() -> None:
    api = make_api()
    h = api.as_key(api.admin)
    r = api.client.post("/api/users", headers=h, json={"username": "alice", "email": "a@example.org",
                                                       "password": "correct horse", "tenant": "team-a"})
    assert r.status_code == 201, r.text
    alice = r.json()
    assert alice["tenant"] == "team-a" and "password" not in json.dumps(alice)
    assert "correct horse" not in json.dumps(api.store.users.named(alice["id"]))
    assert api.client.post("/api/users", headers=h, json={"username": "alice", "password": "x" * 8}).status_code == 409
    assert api.client.get("/api/users", headers=api.as_key(api.manager)).status_code == 403
    assert [u["username"] for u in api.client.get("/api/users", headers=h).json()["items"]] == ["alice"]

    r = api.client.post("/api/auth/login", json={"username": "alice", "password": "wrong password"})
    assert r.status_code == 401
    r = api.client.post("/api/auth/login", json={"username": "alice", "password": "correct horse"})
    assert r.status_code == 200, r.text
    session = r.json()
    assert (session["role"], session["tenant"], session["user_id"]) == ("management", "team-a", alice["id"])
    assert session["expires_at"]
    own = api.as_key(session["key"])
    r = api.client.patch(f"/api/users/{alice['id']}", headers=own, json={"email": "new@example.org"})
    assert r.status_code == 200 and r.json()["email"] == "new@example.org"
    assert api.client.patch(f"/api/users/{alice['id']}", headers=own, json={"is_admin": True}).status_code == 403
    r = api.client.post("/api/api-keys", headers=own, json={"name": "mine"})
    assert r.status_code == 201 and r.json()["user_id"] == alice["id"]
    r = api.client.post("/api/api-keys", headers=h, json={"name": "x", "user_id": alice["id"], "role": "admin"})
    assert r.status_code == 403 and "not an admin" in r.json()["detail"]

    assert api.client.delete(f"/api/users/{alice['id']}", headers=h).status_code == 204
    assert api.client.get("/api/auth/whoami", headers=own).status_code == 401  # her keys went with her


def test_tenants_are_listed_per_caller() -> None:
    api = make_api()
    everyone = api.client.get("/api/tenants", headers=api.as_key(api.admin)).json()["items"]
    assert {t["name"] for t in everyone} == {"default", "team-a"}
    mine = api.client.get("/api/tenants", headers=api.as_key(api.manager)).json()["items"]
    assert [(t["name"], t["slurm_account"]) for t in mine] == [("team-a", "acct-a")]


async def test_the_bootstrap_admin_key_is_stored_as_its_hash_once() -> None:
    from aifactory.api.identity.admin import ensure_bootstrap_key
    from aifactory.api.identity.keys import new_key

    made = new_key()
    api = make_api(bootstrap_admin_key=made.key)
    state = api.client.app.state.aifactory
    await ensure_bootstrap_key(state)
    await ensure_bootstrap_key(state)  # a restart: nothing more
    stored = api.store.keys.named(made.id)
    assert stored["metadata"]["namespace"] == "default" and stored["spec"]["role"] == "admin"
    assert stored["spec"]["keyHash"] == made.key_hash and made.key not in json.dumps(stored)
    assert api.client.get("/api/auth/whoami", headers=api.as_key(made.key)).json()["role"] == "admin"


def test_keygen_prints_a_key_with_the_id_and_hash_the_chart_takes(capsys) -> None:
    from aifactory.api.identity.keys import key_hash, key_id_of
    from aifactory.cli import main

    try:
        main(["keygen"])
    except SystemExit as done:
        assert done.code == 0
    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    key, key_id, hashed = lines["key"].strip(), lines["id"].strip(), lines["hash"].strip()
    assert key_id_of(key) == key_id and key_hash(key) == hashed
