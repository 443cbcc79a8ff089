"""Identity in LMStack's shape (seed 004): /api/api-keys, /api/users, and /api/auth, /api/tenants.

Keys are shown once, when made; lists show their prefix. Passwords are hashed with Argon2 and never returned.
An admin sees every tenant; a management key its own tenant's keys; users are the admins' business.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from aifactory.api.deps import Admin, Caller, Management, StateDep, StoreDep
from aifactory.api.errors import BadRequest, Conflict, NotFound
from aifactory.api.identity import admin
from aifactory.api.identity.keys import new_key, password_hash, password_matches
from aifactory.api.identity.principal import Forbidden, Principal, Unauthorized, parse_time
from aifactory.models import USERNAME_PATTERN, Role, UserSpec

router = APIRouter(prefix="/api", tags=["identity"])

class Detail(BaseModel):
    detail: str


AUTH_ERRORS = {code: {"model": Detail, "description": text} for code, text in {
    400: "The request cannot be done as asked, or Kubernetes refused it (its words)",
    401: "No API key, or an unknown, revoked or expired one",
    403: "The key's role does not allow this",
    404: "No such key, user or tenant (or not the caller's)",
    409: "The name is taken",
    429: "Too many failed authentications; see Retry-After",
    503: "The Kubernetes API is not reachable",
}.items()}


# ---- bodies ----------------------------------------------------------------------------------------------

class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "notebook", "role": "inference", "allowed_models": ["demo-embeddings"],
         "expires_at": "2027-01-01T00:00:00Z"}]})

    name: str = Field(..., min_length=1, max_length=200, description="What the key is for.")
    role: Role | None = Field(None, description="admin, management or inference; default: management, or the "
                                                "caller's own role when that is less.")
    allowed_models: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list, description="Models (service names or served model ids) the key may use; empty = all.")
    expires_at: str | None = Field(None, description="When the key stops working (RFC 3339); unset = never.")
    tenant: str | None = Field(None, description="The tenant (namespace) of the key; only an admin may name "
                                                 "another than its own.")
    user_id: str | None = Field(None, description="The User who owns the key; default: the caller's user.")

    @field_validator("expires_at")
    @classmethod
    def _a_time(cls, value: str | None) -> str | None:
        if value is not None and parse_time(value) is None:
            raise ValueError("expires_at must be an RFC 3339 time, e.g. 2027-01-01T00:00:00Z")
        return value


class ApiKeyInfo(BaseModel):
    id: str
    name: str
    prefix: str = Field(..., description="The key's first characters; the key itself is never shown again.")
    role: Role
    tenant: str
    user_id: str | None = None
    allowed_models: list[str] = Field(default_factory=list)
    expires_at: str | None = None
    created_at: str | None = None
    last_used: str | None = None
    usage: dict[str, int] | None = Field(None, description="Requests and tokens (requests, promptTokens, "
                                         "completionTokens) the gateway forwarded with this key.")


class ApiKeyCreated(ApiKeyInfo):
    key: str = Field(..., description="The key. Shown once: store it now.")


class ApiKeyList(BaseModel):
    items: list[ApiKeyInfo]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(..., pattern=USERNAME_PATTERN, description="Unique login name.")
    email: str | None = Field(None, max_length=320)
    password: str = Field(..., min_length=8, max_length=1024, description="Stored only as an Argon2 hash.")
    is_admin: bool = False
    tenant: str | None = Field(None, description="The user's tenant (namespace); default: the caller's.")


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(None, max_length=320)
    password: str | None = Field(None, min_length=8, max_length=1024)
    is_admin: bool | None = None


class UserInfo(BaseModel):
    id: str
    username: str
    email: str | None = None
    is_admin: bool
    tenant: str
    created_at: str | None = None


class UserList(BaseModel):
    items: list[UserInfo]


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(..., min_length=1, max_length=100)
    password: str = Field(..., min_length=1, max_length=1024)


class TenantInfo(BaseModel):
    name: str
    namespace: str
    description: str = ""
    slurm_account: str | None = None
    slurm_user: str | None = None
    max_running_services: int | None = None


class TenantList(BaseModel):
    items: list[TenantInfo]


class WhoAmI(BaseModel):
    tenant: str
    role: Role
    key_id: str | None = None
    user_id: str | None = None
    allowed_models: list[str] = Field(default_factory=list)


# ---- views -----------------------------------------------------------------------------------------------

def key_info(obj: dict, last_used: float | None = None, usage: dict | None = None) -> dict[str, Any]:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    stored = (obj.get("status") or {}).get("lastUsed")
    seen = admin.stamp(last_used) if last_used else None
    return {"id": meta.get("name"), "name": spec.get("displayName"), "prefix": spec.get("prefix"),
            "role": spec.get("role"), "tenant": meta.get("namespace"), "user_id": spec.get("owner"),
            "allowed_models": spec.get("allowedModels") or [], "expires_at": spec.get("expiresAt"),
            "created_at": meta.get("creationTimestamp"), "last_used": max(filter(None, [stored, seen]), default=None),
            "usage": usage or (obj.get("status") or {}).get("usage")}


def user_info(obj: dict) -> UserInfo:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    return UserInfo(id=meta.get("name", ""), username=spec.get("username", ""), email=spec.get("email"),
                    is_admin=bool(spec.get("isAdmin")), tenant=meta.get("namespace", ""),
                    created_at=meta.get("creationTimestamp"))


def _visible_key(caller: Principal, obj: dict) -> bool:
    return caller.sees((obj.get("metadata") or {}).get("namespace", ""))


def _tenant_exists(state, namespace: str) -> bool:
    return namespace == state.settings.namespace or state.store.tenant_for(namespace) is not None


# ---- API keys --------------------------------------------------------------------------------------------

@router.get("/api-keys", response_model=ApiKeyList, summary="List API Keys", dependencies=[Management],
            responses=AUTH_ERRORS)
async def list_api_keys(state: StateDep, store: StoreDep, caller: Caller) -> ApiKeyList:
    """The keys of the caller's tenant (an admin's: every tenant's), without the keys themselves."""
    used = state.identity.last_used
    items = [key_info(o, used.get(o["metadata"]["name"]), state.traffic.key_usage(o)) for o in store.keys.objects()
             if _visible_key(caller, o)]
    items.sort(key=lambda k: (k["created_at"] or "", k["id"]))
    return ApiKeyList(items=[ApiKeyInfo(**k) for k in items])


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED, summary="Create API Key",
             dependencies=[Management], responses=AUTH_ERRORS)
async def create_api_key(body: ApiKeyCreate, state: StateDep, store: StoreDep, caller: Caller) -> ApiKeyCreated:
    """Make a key; the answer holds the key, once (only its hash is stored)."""
    role = body.role or (Role.management if caller.role.includes(Role.management) else caller.role)
    if not caller.role.includes(role):
        raise Forbidden(f"A {caller.role.value} key cannot make {role.value} keys.")
    owner_id = body.user_id or caller.user
    tenant = body.tenant
    owner = store.users.named(owner_id) if owner_id and owner_id != "trusted" else None
    if body.user_id:
        if owner is None or not caller.sees(owner["metadata"]["namespace"]):
            raise NotFound(f"User {body.user_id} not found")
        if not caller.is_admin and body.user_id != caller.user:
            raise Forbidden("Only an admin makes keys for other users.")
        tenant = tenant or owner["metadata"]["namespace"]
    tenant = tenant or caller.tenant
    if tenant != caller.tenant and not caller.is_admin:
        raise Forbidden("Only an admin makes keys for another tenant.")
    if not _tenant_exists(state, tenant):
        raise NotFound(f"Tenant {tenant} not found")
    if owner is not None and role is Role.admin and not (owner.get("spec") or {}).get("isAdmin"):
        raise Forbidden(f"User {owner_id} is not an admin: an admin key cannot be theirs.")
    if body.expires_at and (parse_time(body.expires_at) or 0) <= time.time():
        raise BadRequest("expires_at is in the past")
    made = new_key()
    manifest = admin.apikey_manifest(made, tenant, name=body.name, role=role,
                                     owner=owner_id if owner is not None else None,
                                     allowed_models=body.allowed_models, expires_at=body.expires_at)
    created = await store.create("apikeys", manifest)
    return ApiKeyCreated(**key_info(created), key=made.key)


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete API Key",
               dependencies=[Management], responses=AUTH_ERRORS)
async def delete_api_key(key_id: Annotated[str, Path(max_length=64)], store: StoreDep, caller: Caller) -> Response:
    """Revoke a key: it stops working at once (within the second the API's watch takes to see it)."""
    obj = store.keys.named(key_id)
    if obj is None or not _visible_key(caller, obj):
        raise NotFound(f"API key {key_id} not found")
    await store.delete("apikeys", obj)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- users -----------------------------------------------------------------------------------------------

@router.get("/users", response_model=UserList, summary="List Users", dependencies=[Admin], responses=AUTH_ERRORS)
async def list_users(store: StoreDep) -> UserList:
    users = sorted(store.users.objects(), key=lambda o: (o["metadata"].get("creationTimestamp") or "",
                                                          o["metadata"]["name"]))
    return UserList(items=[user_info(o) for o in users])


@router.post("/users", response_model=UserInfo, status_code=status.HTTP_201_CREATED, summary="Create User",
             dependencies=[Admin], responses=AUTH_ERRORS)
async def create_user(body: UserCreate, state: StateDep, store: StoreDep, caller: Caller) -> UserInfo:
    tenant = body.tenant or caller.tenant
    if not _tenant_exists(state, tenant):
        raise NotFound(f"Tenant {tenant} not found")
    if any((o.get("spec") or {}).get("username") == body.username for o in store.users.objects()):
        raise Conflict(f"User {body.username} already exists")
    hashed = await asyncio.to_thread(password_hash, body.password)
    spec = UserSpec(username=body.username, email=body.email or None, is_admin=body.is_admin, password_hash=hashed)
    return user_info(await store.create("users", admin.user_manifest(tenant, spec)))


def _user_for(store, caller: Principal, user_id: str) -> dict:
    obj = store.users.named(user_id)
    if obj is None or not (caller.is_admin or caller.user == user_id):
        raise NotFound(f"User {user_id} not found")
    return obj


@router.patch("/users/{user_id}", response_model=UserInfo, summary="Update User", dependencies=[Management],
              responses=AUTH_ERRORS)
async def update_user(user_id: Annotated[str, Path(max_length=64)], body: UserUpdate, store: StoreDep,
                      caller: Caller) -> UserInfo:
    """An admin changes anyone; a user changes their own email and password."""
    obj = _user_for(store, caller, user_id)
    if body.is_admin is not None and not caller.is_admin:
        raise Forbidden("Only an admin changes is_admin.")
    changes: dict[str, Any] = {}
    if body.email:
        changes["email"] = body.email
    if body.is_admin is not None:
        changes["isAdmin"] = body.is_admin
    if body.password is not None:
        changes["passwordHash"] = await asyncio.to_thread(password_hash, body.password)
    if changes:
        obj = await store.patch("users", obj, {"spec": changes})
    return user_info(obj)


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete User",
               dependencies=[Admin], responses=AUTH_ERRORS)
async def delete_user(user_id: Annotated[str, Path(max_length=64)], store: StoreDep, caller: Caller) -> Response:
    """Delete a user and revoke every key they own."""
    obj = _user_for(store, caller, user_id)
    for key in [k for k in store.keys.objects() if (k.get("spec") or {}).get("owner") == user_id]:
        await store.delete("apikeys", key)
    await store.delete("users", obj)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- sign-in, the caller, tenants ------------------------------------------------------------------------

@router.post("/auth/login", response_model=ApiKeyCreated, summary="Log In", responses=AUTH_ERRORS)
async def login(body: LoginRequest, request: Request, state: StateDep, store: StoreDep) -> ApiKeyCreated:
    """A user's name and password for a key of limited life (admin if the user is one, else management)."""
    user = next((o for o in store.users.objects() if (o.get("spec") or {}).get("username") == body.username), None)
    stored = ((user or {}).get("spec") or {}).get("passwordHash")
    ok = await asyncio.to_thread(password_matches, body.password, stored)
    if user is None or not ok:
        client = request.client.host if request.client else "unknown"
        wait = state.identity.throttle.failed(client)
        if wait is not None:
            from aifactory.api.identity.principal import Throttled
            raise Throttled(f"Too many failed sign-ins from {client}; try again in {wait}s.", wait)
        raise Unauthorized("Wrong username or password.")
    spec = user.get("spec") or {}
    role = Role.admin if spec.get("isAdmin") else Role.management
    expires = admin.stamp(time.time() + state.settings.session_hours * 3600)
    made = new_key()
    manifest = admin.apikey_manifest(made, user["metadata"]["namespace"], name=f"sign-in {admin.stamp()}",
                                     role=role, owner=user["metadata"]["name"], expires_at=expires)
    created = await store.create("apikeys", manifest)
    return ApiKeyCreated(**key_info(created), key=made.key)


@router.get("/auth/whoami", response_model=WhoAmI, summary="Who Am I", responses=AUTH_ERRORS)
async def whoami(caller: Caller) -> WhoAmI:
    """The tenant, role and models of the key the request carries."""
    return WhoAmI(tenant=caller.tenant, role=caller.role, key_id=caller.key_id, user_id=caller.user,
                  allowed_models=list(caller.allowed_models))


@router.get("/tenants", response_model=TenantList, summary="List Tenants", dependencies=[Management],
            responses=AUTH_ERRORS)
async def list_tenants(store: StoreDep, caller: Caller) -> TenantList:
    """Tenants are declared as Tenant resources (kubectl); this lists the caller's (an admin's: all)."""
    items = []
    for obj in sorted(store.tenants.objects(), key=lambda o: o["metadata"]["name"]):
        spec = obj.get("spec") or {}
        namespace = spec.get("namespace") or obj["metadata"]["name"]
        if caller.sees(namespace):
            slurm, quotas = spec.get("slurm") or {}, spec.get("quotas") or {}
            items.append(TenantInfo(name=obj["metadata"]["name"], namespace=namespace,
                                    description=spec.get("description") or "", slurm_account=slurm.get("account"),
                                    slurm_user=slurm.get("user"),
                                    max_running_services=quotas.get("maxRunningServices")))
    return TenantList(items=items)
