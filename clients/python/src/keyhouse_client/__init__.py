"""keyhouse-client: the Python client of keyhouse, and middleware for ASGI and WSGI apps.

* ``Keyhouse`` / ``AsyncKeyhouse``: the operator API and ``POST /verify``;
* ``AccountClient`` / ``AsyncAccountClient``: the account API;
* ``KeyhouseAuth`` (ASGI), ``KeyhouseWSGIAuth`` (WSGI), ``Identity``,
  ``identity_of``; ``keyhouse_client.fastapi.require_key`` for FastAPI;
* errors: ``KeyhouseError`` and its subclass ``KeyhouseUnavailable``.

Depends on httpx only.
"""

from keyhouse_client._async import AsyncAccountClient, AsyncKeyhouse
from keyhouse_client._core import DEFAULT_TIMEOUT, RetryPolicy
from keyhouse_client._errors import KeyhouseError, KeyhouseUnavailable
from keyhouse_client._models import (
    Account,
    AccountUsage,
    ApiKey,
    CreatedAccount,
    Environment,
    Event,
    EventActor,
    EventPage,
    KeyRestrictions,
    KeyType,
    Limits,
    LimitsUpdate,
    RateLimitInfo,
    UsageInfo,
    VerifyCode,
    VerifyResult,
)
from keyhouse_client._sync import AccountClient, Keyhouse
from keyhouse_client._version import __version__
from keyhouse_client.middleware import Identity, KeyhouseAuth, KeyhouseWSGIAuth, identity_of

__all__ = [
    "DEFAULT_TIMEOUT",
    "Account",
    "AccountClient",
    "AccountUsage",
    "ApiKey",
    "AsyncAccountClient",
    "AsyncKeyhouse",
    "CreatedAccount",
    "Environment",
    "Event",
    "EventActor",
    "EventPage",
    "Identity",
    "KeyRestrictions",
    "KeyType",
    "Keyhouse",
    "KeyhouseAuth",
    "KeyhouseError",
    "KeyhouseUnavailable",
    "KeyhouseWSGIAuth",
    "Limits",
    "LimitsUpdate",
    "RateLimitInfo",
    "RetryPolicy",
    "UsageInfo",
    "VerifyCode",
    "VerifyResult",
    "__version__",
    "identity_of",
]
