"""Settings: validation, the one-line error, defaults (README, "Settings")."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import BigInteger, Integer

from keyhouse.app import create_app
from keyhouse.config import (
    MAX_WORKERS,
    PLAN_LIMIT_MAX,
    Settings,
    load_settings,
    settings_error_line,
)
from keyhouse.models import Account
from keyhouse.runtime import Runtime
from tests.factories import create_account, listener
from tests.test_cli import expect_one_line_failure, keyhouse

SettingsFactory = Callable[..., Settings]


def error_line(**values: object) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)  # type: ignore[arg-type]
    return settings_error_line(caught.value)


@pytest.mark.parametrize(
    "prefix",
    ["bad prefix!", "", "1sk_", "_sk", "sk-", "sk.", "ské_", "a" * 21, "sk_ ", "s\nk"],
)
@pytest.mark.parametrize("field", ["key_prefix_secret", "key_prefix_public"])
def test_bad_prefix_is_rejected(field: str, prefix: str) -> None:
    line = error_line(**{field: prefix})
    assert f"KEYHOUSE_{field.upper()}" in line


@pytest.mark.parametrize(
    ("field", "prefix"), [("key_prefix_secret", "sk_\n"), ("key_prefix_public", "pk_\n")]
)
def test_prefix_with_trailing_newline_is_rejected(field: str, prefix: str) -> None:
    # A trailing newline (a copy-paste or an env file) would end up inside
    # every key generated; "$" in a regex also matches before a final "\n".
    line = error_line(**{field: prefix})
    assert f"KEYHOUSE_{field.upper()}" in line


@pytest.mark.parametrize("prefix", ["A", "acme_sk_", "live", "a" * 20, "Z9_"])
def test_good_prefix_is_accepted(prefix: str) -> None:
    settings = Settings(key_prefix_secret=prefix)
    assert settings.key_prefix_secret == prefix


@pytest.mark.parametrize(
    ("secret", "public"),
    [("sk_", "sk_x"), ("sk_x", "sk_"), ("sk_", "sk_"), ("key", "key_public_"), ("acme_", "acme")],
)
def test_prefixes_that_start_one_another_are_rejected(secret: str, public: str) -> None:
    with pytest.raises(ValidationError, match="must not start one another"):
        Settings(key_prefix_secret=secret, key_prefix_public=public)


def test_prefix_clash_error_line_names_a_variable() -> None:
    # A bad setting stops the start with one clear line; the
    # operator should learn which variable(s) to fix.
    line = error_line(key_prefix_secret="sk_", key_prefix_public="sk_x")
    assert "\n" not in line
    names_one = "KEYHOUSE_KEY_PREFIX_SECRET" in line or "KEYHOUSE_KEY_PREFIX_PUBLIC" in line
    assert names_one, line


@pytest.mark.parametrize(
    "url",
    [
        "mysql://x",
        "sqlite:///x.db",  # the sync driver
        "postgresql+psycopg://u@h/db",  # another driver
        "postgres+asyncpg://u@h/db",
        "SQLITE+AIOSQLITE:///x.db",
        " sqlite+aiosqlite:///x.db",
    ],
)
def test_database_url_scheme_is_checked(url: str) -> None:
    line = error_line(database_url=url)
    assert "KEYHOUSE_DATABASE_URL" in line


@pytest.mark.parametrize(
    "url",
    ["sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:////abs/x.db", "postgresql+asyncpg://u@h/db"],
)
def test_supported_database_urls_are_accepted(url: str) -> None:
    settings = Settings(database_url=url)
    assert settings.sqlalchemy_url == url
    assert settings.is_sqlite == url.startswith("sqlite")


@pytest.mark.parametrize(
    ("url", "meant"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u:p%40ss@h:5433/db", "postgresql+asyncpg://u:p%40ss@h:5433/db"),
        ("postgresql://u@h/db?sslmode=require", "postgresql+asyncpg://u@h/db?ssl=require"),
    ],
)
def test_libpq_urls_mean_asyncpg(url: str, meant: str) -> None:
    settings = Settings(database_url=url)
    assert settings.database_url == meant
    assert not settings.is_sqlite
    assert not settings.generates_secrets


def test_empty_database_url_means_the_default() -> None:
    assert Settings(database_url="").database_url is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KEYHOUSE_KEY_PREFIX_SECRET", "bad prefix!"),
        ("KEYHOUSE_KEY_PREFIX_PUBLIC", "9"),
        ("KEYHOUSE_DATABASE_URL", "mysql://x"),
        ("KEYHOUSE_MAX_BODY_BYTES", "lots"),
        ("KEYHOUSE_MAX_BODY_BYTES", "10"),
        ("KEYHOUSE_LOG_LEVEL", "loud"),
        ("KEYHOUSE_LIST_REVEALS_KEYS", "perhaps"),
        ("KEYHOUSE_DEFAULT_MAX_KEYS", "-1"),
        ("KEYHOUSE_SQLITE_BUSY_TIMEOUT_MS", "forever"),
    ],
)
def test_settings_error_line_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        load_settings()
    line = settings_error_line(caught.value)
    assert "\n" not in line
    assert line.startswith("invalid setting: ")
    assert f"{variable}: " in line
    assert "Value error" not in line
    assert "pydantic" not in line.lower()  # no "For further information visit ..." URL


def test_settings_error_line_joins_several_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYHOUSE_KEY_PREFIX_SECRET", "bad prefix!")
    monkeypatch.setenv("KEYHOUSE_DATABASE_URL", "mysql://x")
    with pytest.raises(ValidationError) as caught:
        load_settings()
    line = settings_error_line(caught.value)
    assert "\n" not in line
    assert "KEYHOUSE_KEY_PREFIX_SECRET" in line
    assert "KEYHOUSE_DATABASE_URL" in line


def test_defaults() -> None:
    settings = Settings()
    assert settings.data_dir == Path(".keyhouse")
    assert settings.database_url is None
    assert settings.encryption_keys is None
    assert settings.list_reveals_keys is True
    assert settings.key_prefix_secret == "sk_"
    assert settings.key_prefix_public == "pk_"
    assert settings.default_max_keys == 100
    assert settings.is_sqlite
    assert settings.sqlite_path == Path(".keyhouse").resolve() / "keyhouse.db"
    assert settings.sqlalchemy_url == f"sqlite+aiosqlite:///{settings.sqlite_path}"


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYHOUSE_DATA_DIR", "/srv/keyhouse")
    monkeypatch.setenv("KEYHOUSE_LIST_REVEALS_KEYS", "false")
    monkeypatch.setenv("KEYHOUSE_KEY_PREFIX_SECRET", "acme_sk_")
    monkeypatch.setenv("KEYHOUSE_KEY_PREFIX_PUBLIC", "acme_pk_")
    monkeypatch.setenv("KEYHOUSE_DEFAULT_MAX_KEYS", "5")
    settings = load_settings()
    assert settings.data_dir == Path("/srv/keyhouse")
    assert settings.list_reveals_keys is False
    assert settings.key_prefix_secret == "acme_sk_"
    assert settings.key_prefix_public == "acme_pk_"
    assert settings.default_max_keys == 5


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.key_prefix_secret = "other_"  # type: ignore[misc]


def test_encryption_keys_stay_out_of_repr_and_errors() -> None:
    encoded = base64.b64encode(bytes(range(32))).decode("ascii")
    settings = Settings(encryption_keys=f"k1:{encoded}")
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    leaked = encoded in shown
    assert not leaked, "an encryption key appears in the settings' repr or dump"
    # A bad setting next to it: the error line does not carry the key either.
    line = error_line(encryption_keys=f"k1:{encoded}", key_prefix_secret="bad prefix!")
    leaked = encoded in line
    assert not leaked, "an encryption key appears in a settings error line"


# -- numeric settings: bounded by what their column or use holds ---------------------------

PLAN_DEFAULTS = {
    "KEYHOUSE_DEFAULT_MAX_KEYS": "max_keys",
    "KEYHOUSE_DEFAULT_MONTHLY_REQUESTS": "monthly_requests",
    "KEYHOUSE_DEFAULT_RATE_PER_SECOND": "rate_per_second",
    "KEYHOUSE_DEFAULT_BURST": "burst",
}


@pytest.mark.parametrize("column", sorted(PLAN_DEFAULTS.values()))
def test_plan_limit_bound_is_what_the_column_holds(column: str) -> None:
    # INTEGER is 32-bit signed on PostgreSQL; a BIGINT column would allow 2**63 - 1.
    column_type = Account.__table__.c[column].type
    assert isinstance(column_type, Integer)
    assert not isinstance(column_type, BigInteger)
    assert PLAN_LIMIT_MAX == 2**31 - 1


@pytest.mark.parametrize("variable", sorted(PLAN_DEFAULTS))
@pytest.mark.parametrize("value", ["2147483648", "9223372036854775808", "1e3", "10.5", "true"])
def test_plan_default_beyond_the_column_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        load_settings()
    line = settings_error_line(caught.value)
    assert line.startswith(f"invalid setting: {variable}: ")
    assert "\n" not in line


@pytest.mark.parametrize("variable", sorted(PLAN_DEFAULTS))
def test_plan_default_at_the_bound_is_accepted(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, str(PLAN_LIMIT_MAX))
    settings = load_settings()
    assert getattr(settings, variable.removeprefix("KEYHOUSE_").lower()) == PLAN_LIMIT_MAX


@pytest.mark.parametrize(
    "variable",
    [
        "KEYHOUSE_CACHE_TTL_SECONDS",
        "KEYHOUSE_LAST_USED_FLUSH_SECONDS",
        "KEYHOUSE_USAGE_FLUSH_SECONDS",
        "KEYHOUSE_DB_CONNECT_TIMEOUT_SECONDS",
        "KEYHOUSE_DB_POOL_TIMEOUT_SECONDS",
    ],
)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_seconds_are_finite_numbers(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        load_settings()
    assert settings_error_line(caught.value).startswith(f"invalid setting: {variable}: ")


@pytest.mark.parametrize(
    ("variable", "too_large"),
    [
        ("KEYHOUSE_CACHE_MAX_ENTRIES", "10000001"),
        ("KEYHOUSE_WORKERS", "257"),
        ("KEYHOUSE_AUTH_FAILURES_PER_MINUTE", "1000001"),
        ("KEYHOUSE_MAX_BODY_BYTES", str(10 * 1024 * 1024 + 1)),
        ("KEYHOUSE_SQLITE_BUSY_TIMEOUT_MS", "600001"),
        ("KEYHOUSE_DB_POOL_SIZE", "1001"),
        ("KEYHOUSE_DB_MAX_OVERFLOW", "1001"),
    ],
)
def test_every_integer_setting_has_an_upper_bound(
    monkeypatch: pytest.MonkeyPatch, variable: str, too_large: str
) -> None:
    monkeypatch.setenv(variable, too_large)
    with pytest.raises(ValidationError) as caught:
        load_settings()
    assert settings_error_line(caught.value).startswith(f"invalid setting: {variable}: ")


def test_every_numeric_setting_is_bounded_above() -> None:
    """A new int or float setting needs an upper bound (what its column or use holds)."""
    unbounded = []
    for name, field in Settings.model_fields.items():
        numeric = {int, float, int | None, float | None}
        if field.annotation not in numeric:
            continue
        if not any(getattr(m, "le", None) is not None for m in field.metadata):
            unbounded.append(name)
    assert unbounded == []


def test_serve_stops_at_a_plan_default_the_database_cannot_hold(tmp_path: Path) -> None:
    result = keyhouse(tmp_path / "data", "serve", KEYHOUSE_DEFAULT_MONTHLY_REQUESTS="2147483648")
    line = expect_one_line_failure(result)
    assert "KEYHOUSE_DEFAULT_MONTHLY_REQUESTS" in line
    assert "2147483647" in line
    assert not (tmp_path / "data").exists(), "a bad setting still created the data directory"


async def test_plan_defaults_at_the_bound_are_stored(make_settings: SettingsFactory) -> None:
    """On PostgreSQL too: the largest accepted default fits the INTEGER columns."""
    settings = make_settings(
        **{f"default_{column}": PLAN_LIMIT_MAX for column in PLAN_DEFAULTS.values()}
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        acc = await create_account(runtime)
        async with runtime.db.session(write=False) as session:
            row = await session.get(Account, acc.account_id)
            assert row is not None
            limits = [getattr(row, column) for column in PLAN_DEFAULTS.values()]
    assert limits == [PLAN_LIMIT_MAX] * 4


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--port", "70000"], "--port"),  # was an OverflowError traceback from bind()
        (["--port", "-1"], "--port"),
        (["--workers", str(MAX_WORKERS + 1)], "--workers"),  # each worker's Settings refuses it
        (["--workers", "0"], "--workers"),
    ],
)
def test_serve_options_are_bounded_before_anything_starts(
    tmp_path: Path, args: list[str], option: str
) -> None:
    result = keyhouse(tmp_path / "data", "serve", *args)
    assert result.code == 2
    assert "Traceback" not in result.err
    assert f"Invalid value for '{option}'" in result.err
    assert not (tmp_path / "data").exists()


@pytest.mark.postgresql_only
@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_a_libpq_url_serves_on_postgresql(
    make_settings: SettingsFactory, scheme: str
) -> None:
    """``postgresql://…?sslmode=disable``, as providers write it: the pool and the
    change listener (a connection of its own, asyncpg's DSN) both connect."""
    url = make_settings().database_url
    assert url is not None
    libpq = url.replace("postgresql+asyncpg://", f"{scheme}://", 1) + "?sslmode=disable"
    settings = make_settings(database_url=libpq)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        await asyncio.wait_for(listener(runtime).connected.wait(), 10)
        await runtime.db.ping()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text


@pytest.mark.parametrize(
    "name",
    [
        # reviewer r14's: each is read by another layer for a meaning of its own
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "User-Agent",
        "X-Keyhouse-Account-Id",
        "Transfer-Encoding",
        "Connection",
        "TE",
        "Proxy-Authorization",
        # the same kind
        "x-forwarded-host",
        "X-Keyhouse-Forward-Token",
        "X-Real-Ip",
        "Forwarded",
        "Host",
        "Cookie",
        "Content-Type",
        "Content-Length",
        "Content-Encoding",
        "Keep-Alive",
        "Upgrade",
        "Expect",
        "Via",
        "Idempotency-Key",
        "X-Original-URI",
        "Authorization",
    ],
)
def test_forward_auth_header_refuses_headers_others_read(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # With X-Forwarded-For and KEYHOUSE_TRUSTED_PROXIES, the gateway's access log printed
    # "client":"sk_..." (the full key) and sent it upstream as X-Forwarded-For (r14).
    monkeypatch.setenv("KEYHOUSE_FORWARD_AUTH_HEADER", name)
    with pytest.raises(ValidationError) as caught:
        load_settings()
    line = settings_error_line(caught.value)
    assert line.startswith(f"invalid setting: KEYHOUSE_FORWARD_AUTH_HEADER: {name} cannot ")
    assert "X-Api-Key" in line  # what to name instead


@pytest.mark.parametrize("name", ["X-Api-Key", "Api-Key", "X-Auth-Token", "X-Acme-Key"])
def test_forward_auth_header_takes_a_header_of_its_own(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("KEYHOUSE_FORWARD_AUTH_HEADER", name)
    assert load_settings().forward_auth_header == name
