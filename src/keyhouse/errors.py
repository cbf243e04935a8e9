"""The one exception tree. Services raise these; only ``app.py`` renders them.

Each error has an HTTP ``status_code``, a stable machine-readable ``code``
(documented in the OpenAPI spec, never renamed) and, where it helps, a
``fix`` that tells the caller what to do. Messages never contain a key,
an encryption key or an admin token.

    KeyhouseError                      500 internal_error
    ├── BadRequest                     400 validation_error
    │   └── KeyInQuery                 400 key_in_query
    ├── Unauthorized                   401 (abstract; carries WWW-Authenticate)
    │   ├── MissingApiKey              401 missing_api_key
    │   ├── MalformedApiKey            401 malformed_api_key
    │   ├── InvalidApiKey              401 invalid_api_key
    │   ├── RevokedApiKey              401 revoked_api_key
    │   ├── ExpiredApiKey              401 expired_api_key
    │   ├── ForwardTokenRequired       401 forward_token_required
    │   └── InvalidForwardToken        401 invalid_forward_token
    ├── PaymentRequired                402 (abstract)
    │   ├── UsageLimitExceeded         402 usage_limit_exceeded
    │   └── KeyLimitReached            402 key_limit_reached
    ├── Forbidden                      403 insufficient_permissions
    │   ├── InsufficientScope          403 insufficient_scope
    │   ├── ScopeEscalation            403 scope_escalation
    │   ├── IpNotAllowed               403 ip_not_allowed
    │   ├── OriginNotAllowed           403 origin_not_allowed
    │   └── SecretKeyInBrowser         403 secret_key_in_browser
    ├── NotFound                       404 not_found
    │   └── AccountNotFound            404 not_found
    ├── MethodNotAllowed               405 method_not_allowed
    ├── Conflict                       409 conflict
    │   ├── KeyAlreadyRolled           409 conflict
    │   ├── LastSecretKey              409 last_secret_key
    │   └── IdempotencyKeyReused       409 idempotency_key_reused
    ├── PayloadTooLarge                413 payload_too_large
    ├── UnsupportedMediaType           415 unsupported_media_type
    ├── RateLimited                    429 rate_limited
    ├── ProviderError                  502 provider_error
    └── ServiceUnavailable             503 service_unavailable

``ConfigurationError`` is separate: a bad setting stops the start, it is
never an HTTP response.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AccountNotFound",
    "BadRequest",
    "ConfigurationError",
    "Conflict",
    "ErrorCode",
    "ExpiredApiKey",
    "Forbidden",
    "ForwardTokenRequired",
    "IdempotencyKeyReused",
    "InsufficientScope",
    "InvalidApiKey",
    "InvalidForwardToken",
    "IpNotAllowed",
    "KeyAlreadyRolled",
    "KeyInQuery",
    "KeyLimitReached",
    "KeyhouseError",
    "LastSecretKey",
    "MalformedApiKey",
    "MethodNotAllowed",
    "MissingApiKey",
    "NotFound",
    "OriginNotAllowed",
    "PayloadTooLarge",
    "PaymentRequired",
    "ProviderError",
    "RateLimited",
    "RevokedApiKey",
    "ScopeEscalation",
    "SecretKeyInBrowser",
    "ServiceUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
    "UsageLimitExceeded",
]


class ErrorCode(StrEnum):
    """Every ``error.code`` keyhouse can answer with."""

    VALIDATION_ERROR = "validation_error"
    KEY_IN_QUERY = "key_in_query"
    MISSING_API_KEY = "missing_api_key"
    MALFORMED_API_KEY = "malformed_api_key"
    INVALID_API_KEY = "invalid_api_key"
    REVOKED_API_KEY = "revoked_api_key"
    EXPIRED_API_KEY = "expired_api_key"
    FORWARD_TOKEN_REQUIRED = "forward_token_required"  # noqa: S105 (an error code)
    INVALID_FORWARD_TOKEN = "invalid_forward_token"  # noqa: S105 (an error code)
    USAGE_LIMIT_EXCEEDED = "usage_limit_exceeded"
    KEY_LIMIT_REACHED = "key_limit_reached"
    INSUFFICIENT_PERMISSIONS = "insufficient_permissions"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    SCOPE_ESCALATION = "scope_escalation"
    IP_NOT_ALLOWED = "ip_not_allowed"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    SECRET_KEY_IN_BROWSER = "secret_key_in_browser"  # noqa: S105 (an error code)
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    LAST_SECRET_KEY = "last_secret_key"  # noqa: S105 (an error code)
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"
    PROVIDER_ERROR = "provider_error"
    SERVICE_UNAVAILABLE = "service_unavailable"


class KeyhouseError(Exception):
    """Base of every error keyhouse answers with."""

    status_code: int = 500
    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    default_message: str = "Something went wrong on our side."
    default_fix: str | None = "Retry the request; if it keeps failing, report its trackingId."

    def __init__(
        self,
        message: str | None = None,
        *,
        fix: str | None = None,
        headers: dict[str, str] | None = None,
        provider: str | None = None,
        provider_code: str | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.fix = fix if fix is not None else self.default_fix
        self.headers = dict(headers or {})
        self.provider = provider
        self.provider_code = provider_code
        super().__init__(self.message)


class BadRequest(KeyhouseError):
    status_code = 400
    code = ErrorCode.VALIDATION_ERROR
    default_message = "The request is not valid."
    default_fix = "Check the request against the API reference at /docs."


class KeyInQuery(BadRequest):
    code = ErrorCode.KEY_IN_QUERY
    default_message = "An API key was sent in the URL's query string; it was not used."
    default_fix = (
        "Send the key in the header 'Authorization: Bearer <key>'. URLs end up in logs, "
        "so roll the key you sent."
    )


class Unauthorized(KeyhouseError):
    status_code = 401
    default_fix = "Send a valid key in the header 'Authorization: Bearer <key>'."

    def __init__(self, message: str | None = None, *, fix: str | None = None) -> None:
        super().__init__(message, fix=fix, headers={"WWW-Authenticate": 'Bearer realm="keyhouse"'})


class MissingApiKey(Unauthorized):
    code = ErrorCode.MISSING_API_KEY
    default_message = "No API key was sent."


class MalformedApiKey(Unauthorized):
    code = ErrorCode.MALFORMED_API_KEY
    default_message = "The API key is malformed: its checksum does not match."
    default_fix = "Copy the whole key again; a character was changed, added or lost."


class InvalidApiKey(Unauthorized):
    code = ErrorCode.INVALID_API_KEY
    default_message = "The API key is not valid."


class RevokedApiKey(Unauthorized):
    code = ErrorCode.REVOKED_API_KEY
    default_message = "The API key has been revoked."
    default_fix = "Use another key of the account, or create a new one."


class ExpiredApiKey(Unauthorized):
    code = ErrorCode.EXPIRED_API_KEY
    default_message = "The API key has expired."
    default_fix = "Use the key that replaced it (see its roll), or create a new one."


class ForwardTokenRequired(Unauthorized):
    """Forward auth without the proxy's token: the proxy is not configured, not the key wrong."""

    code = ErrorCode.FORWARD_TOKEN_REQUIRED
    default_message = "GET /forward-auth needs the proxy's token; the key was not looked at."
    default_fix = (
        "Configure the proxy to send 'X-Keyhouse-Forward-Token: <token>', a verify token "
        "(KEYHOUSE_VERIFY_TOKENS) or an admin token; see deploy/ for examples."
    )


class InvalidForwardToken(Unauthorized):
    code = ErrorCode.INVALID_FORWARD_TOKEN
    default_message = (
        "The proxy's X-Keyhouse-Forward-Token is not a verify or admin token; the key was "
        "not looked at."
    )
    default_fix = (
        "Set the proxy's X-Keyhouse-Forward-Token to one of KEYHOUSE_VERIFY_TOKENS (or an "
        "admin token)."
    )


class PaymentRequired(KeyhouseError):
    status_code = 402


class UsageLimitExceeded(PaymentRequired):
    code = ErrorCode.USAGE_LIMIT_EXCEEDED
    default_message = "The account has used all requests of its plan for this period."
    default_fix = "Wait for the period to reset, or ask the operator for a larger plan."


class KeyLimitReached(PaymentRequired):
    code = ErrorCode.KEY_LIMIT_REACHED
    default_message = "The account has reached the number of active keys its plan allows."
    default_fix = "Revoke a key you no longer use, or ask the operator for a larger plan."


class Forbidden(KeyhouseError):
    status_code = 403
    code = ErrorCode.INSUFFICIENT_PERMISSIONS
    default_message = "This key may not do that."
    default_fix = "Use an account-wide secret key."


# -- restricted keys (issue 15): what a key's scopes and restrictions refuse ----------


class InsufficientScope(Forbidden):
    """The key's scopes do not grant what the route needs (``keys:write``, ...)."""

    code = ErrorCode.INSUFFICIENT_SCOPE
    default_message = "The key's scopes do not allow this."

    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__(
            f"This needs the scope {scope}, which the key does not have.",
            fix=f"Use a key whose scopes include {scope} (or an unrestricted key), or "
            f"add {scope} to this key's scopes with PATCH /keys/{{id}}.",
        )


class ScopeEscalation(Forbidden):
    """A restricted key asked for a key wider than itself (create, roll)."""

    code = ErrorCode.SCOPE_ESCALATION
    default_message = "A restricted key cannot make a key with more power than its own."
    default_fix = (
        "Ask for scopes among the calling key's own and restrictions at least as narrow "
        "(omit scopes and restrictions to copy the calling key's), or use an unrestricted "
        "account-wide secret key."
    )


class IpNotAllowed(Forbidden):
    """The key has an IP allowlist and the request came from another address."""

    code = ErrorCode.IP_NOT_ALLOWED
    default_message = "The key may not be used from this address."
    default_fix = (
        "Call from an address in the key's ipAllowlist (GET /keys/{id} shows it), or ask "
        "the account to add this address's network to it."
    )


class OriginNotAllowed(Forbidden):
    """The key has allowedOrigins and the request's ``Origin`` is not among them (or absent):
    forward auth and the gateway, where the browser's request itself arrives."""

    code = ErrorCode.ORIGIN_NOT_ALLOWED
    default_message = "The key may not be used from this origin."
    default_fix = (
        "Call from a page whose origin is in the key's allowedOrigins (GET /keys/{id} "
        "shows them), or ask the account to add this origin."
    )


class SecretKeyInBrowser(Forbidden):
    """A secret key sent by a browser, on an account that refuses that."""

    code = ErrorCode.SECRET_KEY_IN_BROWSER
    default_message = (
        "A secret key was sent from a web browser (an Origin or Sec-Fetch-Site: cross-site "
        "header); this account refuses secret keys from browsers."
    )
    default_fix = (
        "Keep secret keys on your servers: call keyhouse from your backend, or use a public "
        "key in front-end code. Roll this key if it was shipped to browsers."
    )


class NotFound(KeyhouseError):
    status_code = 404
    code = ErrorCode.NOT_FOUND
    default_message = "Not found."
    default_fix = "Check the id and the path; see /docs for the routes."


class AccountNotFound(NotFound):
    """Raised by the service that needs the account, not by its callers."""

    default_message = "The account was not found."
    default_fix = "Check the account id (acc_...); GET /admin/accounts lists them."


class MethodNotAllowed(KeyhouseError):
    status_code = 405
    code = ErrorCode.METHOD_NOT_ALLOWED
    default_message = "This method is not allowed on this path."
    default_fix = "See /docs for the methods this path accepts."


class Conflict(KeyhouseError):
    status_code = 409
    code = ErrorCode.CONFLICT
    default_message = "The request conflicts with the current state."
    default_fix: str | None = None


class KeyAlreadyRolled(Conflict):
    """A key that was rolled already: a second roll would make a replacement that
    dies with the first one's grace period (it inherits the old key's expiry)."""

    default_message = "This key was rolled already; it only works until its grace period ends."

    def __init__(self, rolled_to: str) -> None:
        self.rolled_to = rolled_to  # the CLI names its own command with it
        super().__init__(
            f"This key was rolled already, into {rolled_to}; it only works until its "
            "grace period ends.",
            fix=(
                f"Roll the new key instead: POST /keys/{rolled_to}/roll, "
                f"or keyhouse key roll {rolled_to}."
            ),
        )


class LastSecretKey(Conflict):
    code = ErrorCode.LAST_SECRET_KEY
    default_message = "This is the account's last active account-wide secret key."
    default_fix = (
        "Create another account-wide secret key first, or repeat with ?force=true "
        "to lock the account out of its own API."
    )


class IdempotencyKeyReused(Conflict):
    code = ErrorCode.IDEMPOTENCY_KEY_REUSED
    default_message = (
        "This Idempotency-Key was used for another request (method, path, query or body)."
    )
    default_fix = (
        "Send a new Idempotency-Key with each new request; repeat a key only to retry "
        "the very same request."
    )


class PayloadTooLarge(KeyhouseError):
    status_code = 413
    code = ErrorCode.PAYLOAD_TOO_LARGE
    default_message = "The request body is too large."
    default_fix = "Send a smaller body."


class UnsupportedMediaType(KeyhouseError):
    status_code = 415
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    default_message = "The request body must be JSON."
    default_fix = "Send the body with 'Content-Type: application/json'."


class RateLimited(KeyhouseError):
    status_code = 429
    code = ErrorCode.RATE_LIMITED
    default_message = "Too many requests."
    default_fix = "Wait for the number of seconds in the Retry-After header, then retry."


class ProviderError(KeyhouseError):
    status_code = 502
    code = ErrorCode.PROVIDER_ERROR
    default_message = "An upstream provider failed."


class ServiceUnavailable(KeyhouseError):
    status_code = 503
    code = ErrorCode.SERVICE_UNAVAILABLE
    default_message = "The service is unavailable right now."
    default_fix = "Retry after the number of seconds in the Retry-After header."


class ConfigurationError(Exception):
    """A setting or a file keyhouse needs is wrong; the message is one line."""
