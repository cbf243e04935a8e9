# The same with Litestar (or Starlette): the identity is in the request's scope.
import os

from keyhouse_client import AsyncKeyhouse, KeyhouseAuth, identity_of
from litestar import Litestar, get
from litestar.middleware import DefineMiddleware
from litestar.types import Scope

# One client for every route (Litestar builds middleware per route), closed at shutdown.
keyhouse = AsyncKeyhouse(
    os.environ["KEYHOUSE_URL"], os.environ["KEYHOUSE_VERIFY_TOKEN"], max_retries=0
)


@get("/orders")
async def orders(scope: Scope) -> dict[str, str]:
    identity = identity_of(scope)
    assert identity is not None
    return {"account": identity.account_id, "key": identity.key_id}


app = Litestar(
    route_handlers=[orders],
    middleware=[DefineMiddleware(KeyhouseAuth, client=keyhouse)],
    on_shutdown=[keyhouse.close],
)
