"""What routes depend on, as `Annotated` shortcuts: the app's state, the ready store, the caller.

Identity is one dependency every face uses: `requires(role)` on a router (or a route) authenticates the request
once and checks the role; `Caller` hands the resolved Principal to the route.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from aifactory.api.config import ApiSettings
from aifactory.api.identity.principal import Principal
from aifactory.api.state import ApiState
from aifactory.api.store import Store
from aifactory.models import Role


def get_state(request: Request) -> ApiState:
    return request.app.state.aifactory


def get_settings(request: Request) -> ApiSettings:
    return get_state(request).settings


StateDep = Annotated[ApiState, Depends(get_state)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]


async def get_store(state: StateDep) -> Store:
    store = state.store
    await store.ready()
    return store


StoreDep = Annotated[Store, Depends(get_store)]

# Declared so that the OpenAPI document names both ways to send a key (Swagger UI's Authorize button).
_bearer = HTTPBearer(auto_error=False, scheme_name="BearerKey",
                     description="An aifactory API key: `Authorization: Bearer aif_...`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKeyHeader",
                       description="The same key in the X-API-Key header.")


async def authenticate(request: Request, state: StateDep,
                       _b: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                       x_api_key: Annotated[str | None, Depends(_header)]) -> Principal:
    return await state.authenticate(request.headers.get("authorization"), x_api_key,
                                    request.client.host if request.client else "unknown")


Caller = Annotated[Principal, Depends(authenticate)]


def requires(role: Role):
    """A dependency that lets only keys with `role` (or a role including it) through: 401 without a valid key,
    403 with one of a lesser role."""
    async def check(caller: Caller) -> Principal:
        caller.require(role)
        return caller
    check.required_role = role  # type: ignore[attr-defined]  (read by the test that every route is guarded)
    return check


Management = Depends(requires(Role.management))
Inference = Depends(requires(Role.inference))
Admin = Depends(requires(Role.admin))
