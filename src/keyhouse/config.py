"""The one Settings class.

Every setting comes from the environment with the ``KEYHOUSE_`` prefix.
Nothing here is built at import time: ``create_app(settings)`` and the CLI
build a ``Settings`` (tests pass their own), so two apps in one process can
run with different settings.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["MAX_WORKERS", "PLAN_LIMIT_MAX", "Settings", "load_settings", "settings_error_line"]

_PREFIX_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,19}")

# The largest plan limit: the accounts' limit columns are INTEGER (models.Account),
# 32-bit signed on PostgreSQL, so 2**31 was accepted here and failed at the first
# account's insert ("value out of int32 range", a 500). One bound for the settings
# and the API (accounts.schemas); tests/test_config.py checks it against the columns.
PLAN_LIMIT_MAX = 2**31 - 1
# `serve --workers` checks this too: each worker builds its Settings from the
# environment, and one refused there would die and be restarted, forever.
MAX_WORKERS = 256


# KEYHOUSE_FORWARD_AUTH_HEADER: a plain header name (RFC 9110's token, narrowed to what
# API key headers use), and none that another layer reads for a meaning of its own: the
# key would be taken for that meaning (and printed, stored or sent on as such). Found by
# reviewer r14: with X-Forwarded-For and KEYHOUSE_TRUSTED_PROXIES, the gateway's access
# log printed the full key as "client" and sent it upstream as X-Forwarded-For. Compared
# lowercase, with '_' as '-' (CGI-style servers read both as one).
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_RESERVED_HEADERS: dict[str, str] = {
    "authorization": "keyhouse reads 'Authorization: Bearer' already",
    "proxy-authorization": "proxies read and remove it",
    "x-keyhouse-forward-token": "it carries the proxy's own token",
    "idempotency-key": "keyhouse reads it for writes",
    "host": "servers route by it",
    "forwarded": "proxies write the client's address in it",
    "x-real-ip": "proxies write the client's address in it",
    "via": "proxies write themselves in it",
    "user-agent": "keyhouse stores it in the audit log",
    "cookie": "browsers send their cookies in it",
    "connection": "it is hop-by-hop (RFC 9110 section 7.6.1)",
    "keep-alive": "it is hop-by-hop (RFC 9110 section 7.6.1)",
    "te": "it is hop-by-hop (RFC 9110 section 7.6.1)",
    "trailer": "it is hop-by-hop (RFC 9110 section 7.6.1)",
    "transfer-encoding": "it frames the body",
    "upgrade": "it is hop-by-hop (RFC 9110 section 7.6.1)",
    "expect": "servers answer it themselves (100-continue)",
}
_RESERVED_PREFIXES: dict[str, str] = {
    "x-keyhouse-": "keyhouse sets the X-Keyhouse-* headers itself",
    "x-forwarded-": "proxies write the client's address, scheme and host in them",
    "x-original-": "the shipped nginx config sets them (the original URI and method)",
    "content-": "they describe the body",
    "proxy-": "they are the proxies' (hop-by-hop)",
}


def _reserved_because(name: str) -> str | None:
    """Why the header ``name`` cannot carry a raw key, or None when it can."""
    read_as = name.lower().replace("_", "-")
    if read_as in _RESERVED_HEADERS:
        return _RESERVED_HEADERS[read_as]
    for prefix, why in _RESERVED_PREFIXES.items():
        if read_as.startswith(prefix):
            return why
    return None


# The URLs PostgreSQL's own tools and hosting providers hand out (libpq's
# form, https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING-URIS):
# keyhouse reads them as asyncpg's, its one PostgreSQL driver.
_LIBPQ_SCHEMES = ("postgresql://", "postgres://")


def _asyncpg_url(url: str) -> str:
    """A libpq URL as SQLAlchemy's asyncpg one; libpq's ``sslmode`` is asyncpg's ``ssl``
    (the same values: disable, allow, prefer, require, verify-ca, verify-full).

    asyncpg refuses ``sslmode`` as a keyword (``connect() got an unexpected
    keyword argument 'sslmode'``, tried): without the rename a provider's
    ``?sslmode=require`` URL could not connect.
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(drivername="postgresql+asyncpg")
    query = dict(parsed.query)
    if "sslmode" in query and "ssl" not in query:
        query["ssl"] = query.pop("sslmode")
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=False)


class Settings(BaseSettings):
    """keyhouse's settings. See the README for each one."""

    # allow_inf_nan: "nan" or "inf" for a number of seconds is a typo, not a value.
    model_config = SettingsConfigDict(
        env_prefix="KEYHOUSE_", extra="ignore", frozen=True, allow_inf_nan=False
    )

    data_dir: Path = Field(
        default=Path(".keyhouse"),
        description="Directory for the SQLite database and generated secrets (mode 0700).",
    )
    database_url: str | None = Field(
        default=None,
        description="postgresql://... (asyncpg), or a SQLAlchemy async URL; default: SQLite "
        "in the data directory.",
    )
    encryption_keys: SecretStr | None = Field(
        default=None,
        description="'kid:base64-32-bytes,...', newest first. Unset: generated into the data dir.",
    )
    admin_tokens: SecretStr | None = Field(
        default=None,
        description="Operator tokens, comma-separated. Unset: one is generated into the data dir.",
    )
    verify_tokens: SecretStr | None = Field(
        default=None,
        description="Tokens that may call POST /verify and nothing else, comma-separated "
        "(for services that only verify keys). Unset: none.",
    )
    redis_url: str | None = None
    forward_auth_header: str | None = Field(
        default=None,
        description="A header (e.g. X-Api-Key) from which forward auth and the gateway also "
        "read the raw key; unset: Authorization: Bearer only.",
    )
    key_prefix_secret: str = "sk_"  # noqa: S105 (a prefix, not a secret)
    key_prefix_public: str = "pk_"
    list_reveals_keys: bool = Field(
        default=True,
        description="GET /keys shows full secret keys (the seed's `key` member); false masks them.",
    )
    cache_ttl_seconds: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="How long a verified key (or an unknown hash) is cached in-process; 0: off.",
    )
    cache_max_entries: int = Field(default=100_000, ge=0, le=10_000_000)
    last_used_flush_seconds: float = Field(
        default=2.0, gt=0, le=3600, description="How often lastUsedAt is written behind."
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=MAX_WORKERS,
        description="Processes serving (set by `serve --workers`); >1 without Redis: "
        "the monthly quota is counted in the database.",
    )
    usage_flush_seconds: float = Field(
        default=2.0, gt=0, le=3600, description="How often usage counted in memory is saved."
    )
    auth_failures_per_minute: int = Field(
        default=300,
        ge=0,
        le=1_000_000,
        description="Failed authentications a client address may make per minute before "
        "429 (per process; 0: no limit). Keys that pass are never refused.",
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=10 * 1024 * 1024)
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0, le=600_000)
    db_pool_size: int = Field(
        default=10, ge=1, le=1000, description="PostgreSQL connections kept open."
    )
    db_max_overflow: int = Field(default=20, ge=0, le=1000)
    db_max_connections: int | None = Field(
        default=None,
        ge=2,
        le=100_000,
        description="PostgreSQL connections all serve processes together may open; unset: "
        "the server's max_connections less its reserved ones and those in use at start.",
    )
    db_connect_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Connecting and each statement (PostgreSQL): past it, 503 service_unavailable.",
    )
    db_pool_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Waiting for a free pooled connection."
    )
    trusted_proxies: str = Field(
        default="",
        description="Addresses or networks (comma-separated) of the proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto keyhouse believes; unset: none.",
    )
    events_retention_days: int | None = Field(
        default=None,
        ge=1,
        le=36_500,
        description="Audit events older than this many days are deleted (hourly, by each "
        "serving process); unset: kept.",
    )
    # keyhouse gateway (gateway/): its connections to the upstream API.
    gateway_connect_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="`keyhouse gateway`: connecting to the upstream, and waiting for a free "
        "connection to it; past it, 502 provider_error (timeout) or 503.",
    )
    gateway_read_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="`keyhouse gateway`: the longest wait for the upstream's next bytes (its "
        "answer, or the next part of it) or for it to take the next part of a request body.",
    )
    gateway_max_connections: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="`keyhouse gateway`: connections to the upstream each process may open.",
    )
    log_level: str = "info"
    default_max_keys: int | None = Field(default=100, ge=0, le=PLAN_LIMIT_MAX)
    default_monthly_requests: int | None = Field(default=None, ge=0, le=PLAN_LIMIT_MAX)
    default_rate_per_second: int | None = Field(default=None, ge=1, le=PLAN_LIMIT_MAX)
    default_burst: int | None = Field(default=None, ge=1, le=PLAN_LIMIT_MAX)

    @field_validator("key_prefix_secret", "key_prefix_public")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX_RE.fullmatch(value):
            raise ValueError(
                "a key prefix is 1-20 characters of A-Z, a-z, 0-9 and '_', starting with a letter"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("use redis://host:6379/0 (or rediss://, unix://)")
        return value

    @field_validator("forward_auth_header")
    @classmethod
    def _check_forward_auth_header(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip()
        if not _HEADER_NAME_RE.fullmatch(value):
            raise ValueError("a header name is 1-64 letters, digits and '-', e.g. X-Api-Key")
        why = _reserved_because(value)
        if why is not None:
            raise ValueError(
                f"{value} cannot carry the raw key: {why}; name a header of your own, "
                "e.g. X-Api-Key"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        networks = []
        for item in value.split(","):
            if not item.strip():
                continue
            try:
                networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ValueError(
                    f"{item.strip()[:64]!r} is not an IP address or network; list the "
                    "proxies' addresses, e.g. 10.0.0.5,10.1.0.0/16"
                ) from None
        return ",".join(networks)

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"debug", "info", "warning", "error"}:
            raise ValueError("log level is one of debug, info, warning, error")
        return level

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if value.startswith(_LIBPQ_SCHEMES):
            return _asyncpg_url(value)
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "use postgresql://user@host/db (or postgresql+asyncpg://) "
                "or sqlite+aiosqlite:///path/to/file.db"
            )
        return value

    @field_validator("key_prefix_public")
    @classmethod
    def _check_prefixes_distinct(cls, public: str, info: ValidationInfo) -> str:
        secret = info.data.get("key_prefix_secret")
        # A key is parsed by its prefix; if one prefix started the other, a
        # public key could be read as a secret one.
        if secret and (secret.startswith(public) or public.startswith(secret)):
            raise ValueError(
                "the secret and public key prefixes must not start one another "
                "(see KEYHOUSE_KEY_PREFIX_SECRET)"
            )
        return public

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.sqlite_path}"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir.resolve() / "keyhouse.db"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def generates_secrets(self) -> bool:
        """Whether a missing encryption key or admin token may be generated.

        Only with the default database, SQLite in the data directory: the
        generated files sit beside the data they belong to and are found
        together or not at all. With ``KEYHOUSE_DATABASE_URL`` a generated
        secret would belong to whatever directory a command ran in: the CLI on
        PostgreSQL, run from another directory, encrypted a new key under such
        a stray encryption key, and from then on the account's listings
        failed and the key could not be revoked (issue 13).
        """
        return self.database_url is None

    def missing_secrets(self) -> list[str]:
        """The secret settings this configuration needs and lacks (see ``generates_secrets``)."""
        if self.generates_secrets:
            return []
        given = {
            "KEYHOUSE_ENCRYPTION_KEYS": self.encryption_keys,
            "KEYHOUSE_ADMIN_TOKENS": self.admin_tokens,
        }
        return [name for name, value in given.items() if not value]


def settings_error_line(exc: ValidationError) -> str:
    """One readable line for a bad setting: which variable, and what is wrong."""
    parts = []
    for err in exc.errors():
        loc = err.get("loc") or ()
        name = "KEYHOUSE_" + str(loc[0]).upper() if loc else "settings"
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{name}: {msg}")
    return "invalid setting: " + "; ".join(parts)


def load_settings() -> Settings:
    """Settings from the environment (raises pydantic's ValidationError)."""
    return Settings()
