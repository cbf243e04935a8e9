"""What ``/forward-auth`` answers a proxy with when the key passes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from keyhouse.keys.format import KeyType
from keyhouse.schemas import omittable

__all__ = ["ERROR_HEADER", "FORWARD_TOKEN_HEADER", "STATUS_HEADER", "ForwardAuthResponse"]

# The proxy's own credential: a verify or admin token, never the client's key.
FORWARD_TOKEN_HEADER = "X-Keyhouse-Forward-Token"  # noqa: S105 (a header name)
# On every answer of /forward-auth: its status, for proxies that pass on only
# 401 and 403 (nginx's auth_request turns any other status into 500).
STATUS_HEADER = "X-Keyhouse-Status"
# On every non-2xx answer: its envelope as compact ASCII JSON, so a proxy that
# drops the auth answer's body (nginx's auth_request) can still send it on.
ERROR_HEADER = "X-Keyhouse-Error"


class ForwardAuthResponse(BaseModel):
    """The identity of the key that passed, as the ``X-Keyhouse-*`` headers also carry it."""

    model_config = ConfigDict(extra="forbid")

    accountId: str = Field(description="The key's account (header X-Keyhouse-Account-Id).")
    keyId: str = Field(description="The key's id (header X-Keyhouse-Key-Id).")
    keyType: KeyType = Field(description="secret or public (header X-Keyhouse-Key-Type).")
    environmentId: str | None = omittable(
        "The key's environment, when it is scoped to one (header X-Keyhouse-Environment-Id)."
    )
