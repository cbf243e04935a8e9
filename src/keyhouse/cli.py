"""The ``keyhouse`` command: serve, migrate, and manage accounts and keys.

It works on the configured database directly (the same services as the
API), so a new operator needs no token to bootstrap. ``--json`` prints one
JSON object on stdout and nothing else; people get tables that never cut an
id or a key. Every failure is one line on stderr (with ``--json``, one JSON
object ``{"error": {"code", "message", "fix"}}``) and a non-zero exit.

Only ``serve``, ``gateway``, ``migrate`` and ``init`` create a keyhouse (the data
directory, its generated secrets, the database). Every other command refuses
to run where there is none: the data directory is ``./.keyhouse`` of the
directory it runs in, and creating one there by accident gave a second,
empty keyhouse whose admin token the server rejected (issue 13).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer
from alembic.util.exc import CommandError as AlembicCommandError
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text
from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from keyhouse import __version__, errors
from keyhouse.accounts.schemas import Account, CreateAccountRequest, LimitsUpdate
from keyhouse.accounts.service import AccountService
from keyhouse.audit.service import CLI, AuditService, event_object
from keyhouse.config import MAX_WORKERS, Settings, load_settings, settings_error_line
from keyhouse.db.capacity import read_budget, size_pools
from keyhouse.db.migrate import Migration, database_revision, head_revision, migrate
from keyhouse.db.session import DbSession
from keyhouse.environments.schemas import CreateEnvironmentRequest, Environment
from keyhouse.environments.service import EnvironmentService
from keyhouse.ids import is_id
from keyhouse.keys import changes
from keyhouse.keys.format import KeyFormat
from keyhouse.keys.presenter import issued_key_object, key_object
from keyhouse.keys.rotation import DEFAULT_BATCH_SIZE, Batch, Report, reencrypt_all
from keyhouse.keys.schemas import (
    DEFAULT_ROLL_GRACE_SECONDS,
    MAX_ROLL_GRACE_SECONDS,
    CreateKeyRequest,
    RenameKeyRequest,
)
from keyhouse.keys.service import KeyService
from keyhouse.limits.plan import current_period
from keyhouse.limits.repository import UsageRepository
from keyhouse.limits.service import usage_object
from keyhouse.logs import configure_logging, get_logger, route_stdlib_logging
from keyhouse.runtime import Runtime, load_secrets
from keyhouse.scopes.schemas import PutCatalogRequest
from keyhouse.scopes.service import Entry as ScopeEntryValue
from keyhouse.scopes.service import ScopeService, catalog_object
from keyhouse.serving import (
    KEYHOUSE_APP,
    check_port,
    proxy_options,
    serve_socket,
    serve_workers,
    tcp_socket,
)
from keyhouse.timeutil import utcnow

__all__ = ["CliError", "app", "main"]

# serve's own lines (where it serves, the data directory), JSON like the server's.
serve_log = get_logger("keyhouse.serve")

T = TypeVar("T")

# Plain help (click's layout): Typer's Rich help printed a type column that
# read "<bool>" for every flag, --help included.
app = typer.Typer(
    name="keyhouse",
    help="keyhouse: a self-hosted API key service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
account_app = typer.Typer(
    help="Accounts (the operator's customers).", no_args_is_help=True, rich_markup_mode=None
)
environment_app = typer.Typer(
    help="Environments inside an account.", no_args_is_help=True, rich_markup_mode=None
)
key_app = typer.Typer(help="API keys.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(account_app, name="account")
app.add_typer(environment_app, name="environment")
app.add_typer(key_app, name="key")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object, nothing else.")]
AccountOpt = Annotated[str, typer.Option("--account", metavar="ACCOUNT_ID", help="acc_...")]
KeyIdArg = Annotated[str, typer.Argument(metavar="KEY_ID", help="Key id (key_...).")]
AccountArg = Annotated[str, typer.Argument(metavar="ACCOUNT_ID", help="Account id (acc_...).")]

# A key expiring within this long shows as "expiring" in `key list`. It is the
# longest roll grace, so a key in its grace period after a roll always does.
EXPIRING_WITHIN = timedelta(seconds=MAX_ROLL_GRACE_SECONDS)


# -- failures ---------------------------------------------------------------------


_API_CODES = frozenset(errors.ErrorCode)


class CliError(Exception):
    """A failure of a command: one line on stderr (JSON with --json), exit status 1.

    ``code`` is the API's error code where the failure is the API's
    (``not_found``, ``last_secret_key``, ...), else one of the CLI's own:
    ``invalid_setting``, ``configuration_error``, ``not_initialized``,
    ``database_error``, ``migration_failed``, ``usage_error``.
    """

    def __init__(self, code: str, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fix = fix

    def line(self) -> str:
        # The API's codes lead the line, as they always did (scripts grep them).
        code = f"{self.code}: " if self.code in _API_CODES else ""
        fix = f" ({self.fix})" if self.fix else ""
        return f"keyhouse: {code}{self.message}{fix}"

    def as_json(self) -> str:
        error = {"code": self.code, "message": self.message}
        if self.fix:
            error["fix"] = self.fix
        return json.dumps({"error": error}, ensure_ascii=False)


def fail(code: str, message: str, fix: str | None = None) -> NoReturn:
    raise CliError(code, message, fix)


# A fix written for the API names its routes ("GET /keys", "?force=true"): the
# CLI says which command to run instead (CLI_FIXES, a command's own table, or
# _ROUTE_COMMANDS below), else keeps the API's words.

# The CLI's own fix for each API error a command can meet (text, or made from
# the error); a command adds or overrides by class (the most specific class wins).
Fix = str | Callable[[Any], str]
CLI_FIXES: dict[type[errors.KeyhouseError], Fix] = {
    errors.AccountNotFound: (
        "`keyhouse account list` lists the accounts; `keyhouse status` shows which keyhouse this is"
    ),
    errors.KeyLimitReached: (
        "revoke a key no longer used (`keyhouse key revoke KEY_ID`), or raise the limit "
        "(`keyhouse account limits ACCOUNT_ID --max-keys N`)"
    ),
    errors.LastSecretKey: (
        "create another account-wide secret key first (`keyhouse key create --account "
        "ACCOUNT_ID --name NAME --type secret`), or repeat with --force to lock the "
        "account out of its own API"
    ),
    errors.NotFound: "`keyhouse key list --account ACCOUNT_ID` lists an account's keys",
    errors.KeyAlreadyRolled: lambda exc: (
        f"roll the new key instead: `keyhouse key roll {exc.rolled_to}`"
    ),
}

Fixes = Mapping[type[errors.KeyhouseError], Fix]


# The API's routes a fix may name, in the CLI's words (review r15: a fix that
# named one was dropped, and `scopes set` with 'keys:foo' said what was wrong
# but not what to do).
_ROUTE_COMMANDS = (
    ("GET /admin/scopes", "`keyhouse scopes list`"),
    ("PUT /admin/scopes", "`keyhouse scopes set FILE.json`"),
    ("GET /keys", "`keyhouse key list --account ACCOUNT_ID`"),
    ("GET /environments", "`keyhouse environment list --account ACCOUNT_ID`"),
    ("GET /events", "`keyhouse events --account ACCOUNT_ID`"),
    ("GET /admin/accounts", "`keyhouse account list`"),
)


def _cli_fix(exc: errors.KeyhouseError, fixes: Fixes) -> str | None:
    """The fix the CLI prints for an API error: its own where it has one, else the
    API's, with the routes it names put as commands. Never dropped: an error
    that has a fix keeps one."""
    for cls in type(exc).__mro__:
        for table in (fixes, CLI_FIXES):
            if cls in table:
                fix = table[cls]
                return fix if isinstance(fix, str) else fix(exc)
    if not exc.fix:
        return None
    fix = exc.fix
    for route, command in _ROUTE_COMMANDS:
        fix = fix.replace(route, command)
    return fix


def _settings() -> Settings:
    """The settings of every command; from here on its log lines go to stderr."""
    try:
        settings = load_settings()
    except ValidationError as exc:
        fail("invalid_setting", settings_error_line(exc))
    _log_to_stderr(settings)
    return settings


def _log_to_stderr(settings: Settings) -> None:
    """A command's log lines: JSON on stderr at the settings' level, never on stdout.

    Unconfigured, structlog prints to stdout in its console format: the
    ``key_not_recoverable`` warning of ``key list --json`` (a key that no
    configured encryption key decrypts) came out as a coloured text line
    above the JSON object, which no longer parsed (tests/cli/test_logging.py).
    Stdlib loggers get the same JSON lines, but not below warning: alembic
    logs each migration step at INFO ("Running upgrade ..."), which Python's
    last-resort handler never showed, and ``migrate`` says what it did itself.
    ``serve`` lowers that to the settings' level once it serves.
    """
    configure_logging(settings.log_level)
    route_stdlib_logging("error" if settings.log_level == "error" else "warning")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _hide_password(url: str) -> str:
    """A URL as it may be shown: the password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def database_where(settings: Settings) -> str:
    return make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)


def run(
    settings: Settings,
    work: Callable[[], Coroutine[Any, Any, T]],
    fixes: Fixes | None = None,
) -> T:
    """Run ``work`` with every failure turned into a ``CliError``."""
    try:
        return asyncio.run(work())
    except CliError:
        raise
    except errors.KeyhouseError as exc:
        raise CliError(exc.code, exc.message, _cli_fix(exc, fixes or {})) from None
    except errors.ConfigurationError as exc:
        fail("configuration_error", str(exc))
    except (OperationalError, DBAPIError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        fail(
            "database_error",
            f"cannot use the database at {database_where(settings)}: {_first_line(reason)}",
        )
    except AlembicCommandError as exc:
        # E.g. a database migrated by a newer keyhouse than this one.
        fail("migration_failed", f"cannot migrate the database: {_first_line(exc)}")


# -- finding the keyhouse -------------------------------------------------------------


def _sqlite_file(settings: Settings) -> Path | None:
    if not settings.is_sqlite:
        return None
    database = make_url(settings.sqlalchemy_url).database
    return Path(database).resolve() if database and database != ":memory:" else None


def require_keyhouse(settings: Settings) -> None:
    """Refuse, in one line, to run where there is no keyhouse: creating one is
    for ``serve``, ``migrate`` and ``init``."""
    path = _sqlite_file(settings)
    if path is None or path.is_file():
        return
    if settings.database_url is None:
        where = settings.data_dir.resolve()
        fail(
            "not_initialized",
            f"no keyhouse data directory at {where}"
            if not where.is_dir()
            else f"no keyhouse database in {where}",
            "run it where `keyhouse serve` runs, or set KEYHOUSE_DATA_DIR to that keyhouse's "
            "data directory, or KEYHOUSE_DATABASE_URL to its database; `keyhouse init` "
            "creates a new keyhouse",
        )
    fail(
        "not_initialized",
        f"no SQLite database at {path}",
        "check KEYHOUSE_DATABASE_URL; `keyhouse migrate` creates the database",
    )


async def _schema_ready(settings: Settings, runtime: Runtime) -> None:
    """A keyhouse schema is there (brought up to date, as always); an empty database is refused."""
    revision = await database_revision(runtime.db)
    if revision is None:
        fail(
            "not_initialized",
            f"the database at {database_where(settings)} holds no keyhouse",
            "`keyhouse migrate` (or `keyhouse serve`) creates its tables",
        )
    if revision != head_revision():
        await migrate(settings)


def with_session(
    settings: Settings,
    work: Callable[[DbSession, Runtime], Awaitable[T]],
    fixes: Fixes | None = None,
) -> T:
    """Run ``work`` in one transaction, as one API request would, on an existing keyhouse."""
    require_keyhouse(settings)

    async def _go() -> T:
        runtime = Runtime.build(settings, generate_secrets=False)
        try:
            await _schema_ready(settings, runtime)
            async with changes.session(runtime, write=True) as session:
                return await work(session, runtime)
        finally:
            await runtime.close()

    return run(settings, _go, fixes)


def _validated(model: type[BaseModel], data: dict[str, Any], flags: Mapping[str, str]) -> Any:
    """``data`` checked by the API's own request schema, errors named by the CLI's flags."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        member = str(err["loc"][0]) if err["loc"] else ""
        message = str(err["msg"]).removeprefix("Value error, ")
        fail(
            "validation_error",
            f"{flags.get(member, member)}: {message}",
            "see the command's --help for its options",
        )


# -- output -------------------------------------------------------------------------


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, whole: Collection[str]
) -> None:
    """Rows for people, with every value of a ``whole`` column (ids, keys) uncut.

    A table when one fits the terminal with those columns at full width and
    the others at a readable width (up to ``_FOLDED_WIDTH``; longer values
    fold); otherwise one block of ``column  value`` lines per row, as psql's
    expanded display does: an id and a full key side by side already take 82
    columns. Either way each id and key stands whole on one line, to be copied.
    """
    console = Console(highlight=False)
    widths = []
    for i, header in enumerate(headers):
        longest = max([0, *(len(row[i]) for row in rows)])
        cap = longest if header in whole else min(longest, _FOLDED_WIDTH)
        widths.append(max(len(header), cap))
    # A rich table takes each column's width plus 3 (padding and a border), plus 1.
    if sum(widths) + 3 * len(widths) + 1 <= console.width:
        columns = [
            Column(h, no_wrap=h in whole, overflow="fold", min_width=w)
            for h, w in zip(headers, widths, strict=True)
        ]
        table = Table(*columns)
        for row in rows:
            table.add_row(*(Text(value) for value in row))
        with console.capture() as captured:
            console.print(table)
        rendered = captured.get()
        lines = rendered.splitlines()
        kept = [i for i, h in enumerate(headers) if h in whole]
        # Checked, not assumed: should rich still narrow a column, expand instead.
        if all(any(row[i] in line for line in lines) for row in rows for i in kept):
            sys.stdout.write(rendered)
            return
    label = max(len(h) for h in headers)
    out: list[str] = []
    for number, row in enumerate(rows, 1):
        out.append(f"-[ {number} ]" + "-" * max(0, label - 4))
        out.extend(f"{h.ljust(label)}  {value}" for h, value in zip(headers, row, strict=True))
    sys.stdout.write("\n".join(out) + "\n" if out else "(none)\n")


# The widest a column of names or timestamps gets before it folds (a timestamp is 24).
_FOLDED_WIDTH = 24


def key_state(key: Mapping[str, Any], now: datetime) -> str:
    """``revoked``, ``expired``, ``expiring`` (within ``EXPIRING_WITHIN``) or ``active``."""
    if key["revoked"]:
        return "revoked"
    expires = key.get("expiresAt")
    if expires is None:
        return "active"
    at = datetime.fromisoformat(expires)
    if at <= now:
        return "expired"
    return "expiring" if at - now <= EXPIRING_WITHIN else "active"


def _print_keys(keys: list[dict[str, Any]]) -> None:
    now = utcnow()
    headers = ["id", "name", "type", "environment", "key", "state", "expires", "created"]
    headers.append("last used")
    rows = [
        [
            k["id"],
            k["name"],
            k["keyType"],
            k.get("environmentId", "-"),
            k["key"],
            key_state(k, now),
            k.get("expiresAt", "-"),
            k["createdAt"],
            k.get("lastUsedAt", "-"),
        ]
        for k in keys
    ]
    print_table(headers, rows, whole={"id", "environment", "key"})


def _print_issued(what: str, obj: Mapping[str, Any]) -> None:
    """A key just issued: its id, then the full key alone on its line (shown once)."""
    sys.stdout.write(f"{what} {obj['id']}:\n{obj['key']}\n")


# -- the root: --version ---------------------------------------------------------


def _print_version(value: bool) -> None:
    if value:
        print(f"keyhouse {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version."
        ),
    ] = False,
) -> None:
    """keyhouse: a self-hosted API key service.

    The CLI works on the keyhouse of its data directory (KEYHOUSE_DATA_DIR,
    default ./.keyhouse) or of KEYHOUSE_DATABASE_URL; `keyhouse status` shows
    which one.
    """


# -- init, status, serve, migrate ---------------------------------------------------


async def _create(settings: Settings) -> Migration:
    """What serve, migrate and init do first: the secrets (generated into the
    data directory where allowed and missing) and the schema at head."""
    load_secrets(settings, generate=True)
    return await migrate(settings)


@app.command()
def init(as_json: JsonOpt = False) -> None:
    """Create a keyhouse (serve does it too).

    The data directory with its generated secrets (KEYHOUSE_DATA_DIR, default
    ./.keyhouse) and the database, at the newest schema. Nothing changes where
    one exists.
    """
    settings = _settings()
    done = run(settings, lambda: _create(settings))
    created = done.before is None
    where = database_where(settings)
    if as_json:
        emit_json(
            {
                "created": created,
                "dataDir": str(settings.data_dir.resolve()),
                "database": where,
                "revision": done.after,
            }
        )
    elif created:
        data_dir = settings.data_dir.resolve()
        secrets = f"data directory {data_dir}, " if settings.generates_secrets else ""
        print(
            f"keyhouse: created a keyhouse: {secrets}database {where} (revision "
            f"{done.after}); `keyhouse status` shows it"
        )
    else:
        upgraded = f", upgraded to {done.after}" if done.after != done.before else ""
        print(
            f"keyhouse: {where} already holds a keyhouse (revision {done.before}{upgraded}); "
            "nothing created"
        )


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Show which keyhouse the CLI uses.

    The database (password hidden) and its schema revision, the data
    directory, the encryption key ids, the admin tokens' source, the limits
    mode and the version.
    """
    settings = _settings()
    require_keyhouse(settings)

    async def _go() -> dict[str, Any]:
        runtime = Runtime.build(settings, generate_secrets=False)
        try:
            revision = await database_revision(runtime.db)
            data_dir = settings.data_dir.resolve()
            limits: dict[str, Any] = {"mode": runtime.limiter.mode}
            if settings.redis_url:
                limits["redisUrl"] = _hide_password(settings.redis_url)
            return {
                "version": __version__,
                "database": {
                    "url": database_where(settings),
                    "revision": revision,
                    "newestRevision": head_revision(),
                },
                "dataDir": str(data_dir),
                "encryptionKeys": {
                    "ids": runtime.keyring.kids,
                    "from": "KEYHOUSE_ENCRYPTION_KEYS"
                    if settings.encryption_keys
                    else str(data_dir / "encryption_keys"),
                },
                "adminTokens": {
                    "count": runtime.admin_tokens.count,
                    "from": "KEYHOUSE_ADMIN_TOKENS"
                    if settings.admin_tokens
                    else str(data_dir / "admin_tokens"),
                },
                "limits": limits,
            }
        finally:
            await runtime.close()

    result = run(settings, _go)
    if as_json:
        emit_json(result)
        return
    db, keys, tokens, limits = (
        result["database"],
        result["encryptionKeys"],
        result["adminTokens"],
        result["limits"],
    )
    revision = db["revision"] or "none (no keyhouse schema: run `keyhouse migrate`)"
    if db["revision"] and db["revision"] == db["newestRevision"]:
        revision += " (the newest)"
    mode = limits["mode"]
    if mode == "memory":
        mode += " (one process; `serve --workers N` without KEYHOUSE_REDIS_URL: database)"
    elif mode == "redis":
        mode += f" ({limits['redisUrl']})"
    ids = ", ".join(keys["ids"])
    rows = [
        ("version", result["version"]),
        ("database", db["url"]),
        ("schema", revision),
        ("data directory", result["dataDir"]),
        ("encryption keys", f"{ids} (the first encrypts; from {keys['from']})"),
        ("admin tokens", f"{tokens['count']} (from {tokens['from']})"),
        ("limits", mode),
    ]
    width = max(len(label) for label, _ in rows)
    sys.stdout.write("".join(f"{label.ljust(width)}  {value}\n" for label, value in rows))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=MAX_WORKERS, help="Worker processes.")] = 1,
) -> None:
    """Serve the API (creating or migrating the keyhouse first).

    Logs go to stderr, one JSON object a line (uvicorn's too).
    """
    settings = _settings()

    def make_app(settings: Settings) -> Any:
        from keyhouse.app import create_app

        return create_app(settings)

    _serve(settings, host, port, workers, make_app)


def _serve(
    settings: Settings,
    host: str,
    port: int,
    workers: int,
    make_app: Callable[[Settings], Any],
    *,
    app_path: str = KEYHOUSE_APP,
    worker_env: Mapping[str, str] | None = None,
) -> None:
    """What ``serve`` and ``gateway`` do: create or migrate the keyhouse, then serve
    ``make_app(settings)`` in this process, or ``app_path`` (a factory) in ``workers`` of them."""
    configure_logging(settings.log_level)
    # The address first: a taken port is one line and exit 1, before anything
    # is created or migrated.
    sock: socket.socket | None = None
    try:
        if workers > 1:
            check_port(host, port)
        else:
            sock = tcp_socket(host, port, reuse_port=False)
    except OSError as exc:
        fail("address_in_use", f"cannot listen on {host}:{port}: {exc.strerror}")
    if not settings.is_sqlite and not settings.missing_secrets():
        # Before anything logs: a refusal is one line. (Missing secrets: _create says so.)
        settings = _fit_pools(settings, workers)
    # From here every line is JSON, the migration's (alembic) and uvicorn's too.
    route_stdlib_logging(settings.log_level)
    # Before any worker starts: the generated secrets are written once, and
    # the schema is at head.
    run(settings, lambda: _create(settings))
    # keyhouse writes its own access log line (no query string, tracking id).
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,
        "log_level": settings.log_level,
        "server_header": False,
        **proxy_options(settings.trusted_proxies),
    }
    if workers > 1:
        # The workers read their settings from the environment: tell them how
        # many they are, so usage is counted where all of them see it.
        os.environ["KEYHOUSE_WORKERS"] = str(workers)
        os.environ.update(worker_env or {})
        if not settings.redis_url:
            serve_log.warning(
                "workers_without_redis",
                workers=workers,
                detail="without KEYHOUSE_REDIS_URL the monthly quota is counted in the "
                "database (exact, one write per request); rate limits hold per worker",
            )
        _announce_data_dir(settings)
        serve_workers(host, port, workers, options, app=app_path)
    else:
        # The worker's way, in this process: its own IPPROTO_TCP socket (bound
        # above) and serve_socket.
        assert sock is not None
        _announce_data_dir(settings)
        serve_log.info(
            "serving", url=f"http://{host}:{sock.getsockname()[1]}", workers=1, pid=os.getpid()
        )
        serve_socket(sock, {**options, "app": make_app(settings)})


@app.command()
def gateway(
    upstream: Annotated[
        str,
        typer.Option(
            envvar="KEYHOUSE_GATEWAY_UPSTREAM",
            help="The API keyhouse stands in front of: http(s)://host[:port][/path].",
        ),
    ],
    provider: Annotated[
        str,
        typer.Option(
            envvar="KEYHOUSE_GATEWAY_PROVIDER",
            help="The API's name in 502 provider_error answers (e.g. acme-api).",
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, max=MAX_WORKERS, help="Worker processes.")] = 1,
) -> None:
    """Serve as a reverse proxy in front of your API (creating or migrating the keyhouse first).

    Every request needs an account's key (Authorization: Bearer); it is
    metered like a call of the account API, then passed to the upstream
    without the key and with X-Keyhouse-* identity headers. Bodies stream
    both ways. Logs go to stderr, one JSON object a line.
    """
    from keyhouse.gateway.app import PROVIDER_ENV, UPSTREAM_ENV, create_gateway_app
    from keyhouse.gateway.upstream import Upstream, check_provider

    settings = _settings()
    try:
        parsed = Upstream.parse(upstream)
        check_provider(provider)
    except ValueError as exc:
        fail("usage_error", str(exc))

    def make_app(settings: Settings) -> Any:
        return create_gateway_app(settings, parsed, provider)

    _serve(
        settings,
        host,
        port,
        workers,
        make_app,
        app_path="keyhouse.gateway.app:gateway_app_from_env",
        worker_env={UPSTREAM_ENV: upstream, PROVIDER_ENV: provider},
    )


def _fit_pools(settings: Settings, workers: int) -> Settings:
    """The settings with each process's pool sized to its share of PostgreSQL's
    connections (``db/capacity.py``); the workers read it from the environment."""
    budget = run(settings, lambda: read_budget(settings))
    try:
        sizes = size_pools(
            budget.connections, workers, settings.db_pool_size, settings.db_max_overflow
        )
    except ValueError as exc:
        fail("configuration_error", str(exc))
    report = serve_log.warning if sizes.reduced else serve_log.info
    report(
        "database_pool",
        workers=workers,
        pool_size=sizes.pool_size,
        max_overflow=sizes.max_overflow,
        connections_per_process=sizes.per_process,
        budget=budget.connections,
        server_max_connections=budget.max_connections,
        in_use_by_others=budget.in_use,
        reduced=sizes.reduced,
    )
    if not sizes.reduced:
        return settings
    os.environ["KEYHOUSE_DB_POOL_SIZE"] = str(sizes.pool_size)
    os.environ["KEYHOUSE_DB_MAX_OVERFLOW"] = str(sizes.max_overflow)
    return settings.model_copy(
        update={"db_pool_size": sizes.pool_size, "db_max_overflow": sizes.max_overflow}
    )


def _announce_data_dir(settings: Settings) -> None:
    """Where the keyhouse is, and how the CLI elsewhere finds it (the default database only)."""
    if settings.generates_secrets:
        data_dir = settings.data_dir.resolve()
        serve_log.info(
            "data_directory",
            data_dir=str(data_dir),
            detail=f"the keyhouse command uses it when run here or with "
            f"KEYHOUSE_DATA_DIR={data_dir} (`keyhouse admin-token` prints the operator token)",
        )


@app.command("migrate")
def migrate_command(as_json: JsonOpt = False) -> None:
    """Bring the database schema to the newest revision.

    Creates the keyhouse where there is none, and says which revision it
    found and which it left.
    """
    settings = _settings()
    done = run(settings, lambda: _create(settings))
    where = database_where(settings)
    if as_json:
        emit_json({"database": where, "from": done.before, "to": done.after})
    elif done.before == done.after:
        print(f"keyhouse: {where} is at revision {done.after}, the newest: nothing to do")
    else:
        before = f"revision {done.before}" if done.before else "an empty database"
        print(f"keyhouse: migrated {where} from {before} to revision {done.after}")


# -- accounts -------------------------------------------------------------------------


@account_app.command("create")
def account_create(
    name: Annotated[str, typer.Option("--name", help="The account's name.")],
    as_json: JsonOpt = False,
) -> None:
    """Create an account and its first account-wide secret key (shown once here)."""
    settings = _settings()
    body = _validated(CreateAccountRequest, {"name": name}, {"name": "--name"})

    async def work(session: DbSession, runtime: Runtime) -> dict[str, str]:
        new = await AccountService(session, runtime).create(body.name, actor=CLI)
        return {"accountId": new.account.id, "keyId": new.key.row.id, "key": new.key.plaintext}

    result = with_session(settings, work)
    if as_json:
        emit_json(result)
        return
    sys.stdout.write(
        f"Created account {result['accountId']} ({body.name}).\n"
        f"Its secret key {result['keyId']} (shown once):\n{result['key']}\n"
    )


@account_app.command("list")
def account_list(as_json: JsonOpt = False) -> None:
    """List accounts, newest first."""
    settings = _settings()

    async def work(session: DbSession, runtime: Runtime) -> list[dict[str, Any]]:
        rows = await AccountService(session, runtime).list_accounts()
        return [Account.from_row(r).to_json() for r in rows]

    accounts = with_session(settings, work)
    if as_json:
        emit_json({"accounts": accounts})
        return
    headers = ["id", "name", "max keys", "monthly requests", "rate/s", "burst", "created"]
    rows = [
        [
            a["id"],
            a["name"],
            *(
                _limit(a["limits"][m])
                for m in ("maxKeys", "monthlyRequests", "ratePerSecond", "burst")
            ),
            a["createdAt"],
        ]
        for a in accounts
    ]
    print_table(headers, rows, whole={"id"})


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def _limit_value(raw: str, flag: str) -> int | str | None:
    """``unlimited`` (or none, null) is None; anything else goes to the schema as given."""
    if raw.lower() in {"none", "null", "unlimited"}:
        return None
    try:
        return int(raw)
    except ValueError:
        fail(
            "validation_error",
            f"{flag} is an integer or 'unlimited'",
            f"write e.g. {flag} 1000, or {flag} unlimited",
        )


@account_app.command("limits")
def account_limits(
    account: AccountArg,
    max_keys: Annotated[str | None, typer.Option("--max-keys", help="N or 'unlimited'.")] = None,
    monthly_requests: Annotated[
        str | None, typer.Option("--monthly-requests", help="N or 'unlimited'.")
    ] = None,
    rate_per_second: Annotated[
        str | None, typer.Option("--rate-per-second", help="N or 'unlimited'.")
    ] = None,
    burst: Annotated[str | None, typer.Option("--burst", help="N or 'unlimited'.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show or set an account's plan limits (only the options given change)."""
    settings = _settings()
    flags = {
        "maxKeys": "--max-keys",
        "monthlyRequests": "--monthly-requests",
        "ratePerSecond": "--rate-per-second",
        "burst": "--burst",
    }
    given = {
        "maxKeys": max_keys,
        "monthlyRequests": monthly_requests,
        "ratePerSecond": rate_per_second,
        "burst": burst,
    }
    update = {m: _limit_value(raw, flags[m]) for m, raw in given.items() if raw is not None}
    # The API's own schema checks the values (PATCH /admin/accounts/{id}).
    limits = _validated(LimitsUpdate, update, flags) if update else None

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        service = AccountService(session, runtime)
        row = await service.update(account, limits=limits, actor=CLI)
        return Account.from_row(row).to_json()

    result = with_session(settings, work)
    if as_json:
        emit_json(result)
        return
    for member, value in result["limits"].items():
        print(f"{member}: {_limit(value)}")


@account_app.command("usage")
def account_usage(account: AccountArg, as_json: JsonOpt = False) -> None:
    """This period's usage of an account, as saved in the database.

    A running server saves its counts every KEYHOUSE_USAGE_FLUSH_SECONDS (2 s)
    and on shutdown; with Redis, the live count is in Redis (GET /account).
    """
    settings = _settings()

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        row = await AccountService(session, runtime).get(account)
        period = current_period(utcnow())
        used = await UsageRepository(session, is_sqlite=runtime.db.is_sqlite).get(
            account, period.key
        )
        return {
            "accountId": account,
            "period": period.key,
            **usage_object(used, period, limit=row.monthly_requests),
        }

    result = with_session(settings, work)
    if as_json:
        emit_json(result)
        return
    limit = f" of {result['limit']}" if "limit" in result else " (no monthly limit)"
    print(
        f"{account}: {result['requests']} requests{limit} in {result['period']}; "
        f"resets at {result['resetsAt']}"
    )


# -- environments -------------------------------------------------------------------


@environment_app.command("create")
def environment_create(
    account: AccountOpt,
    name: Annotated[str, typer.Option("--name", help="Name, unique in the account.")],
    as_json: JsonOpt = False,
) -> None:
    """Create an environment in an account."""
    settings = _settings()
    body = _validated(CreateEnvironmentRequest, {"name": name}, {"name": "--name"})

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        row = await EnvironmentService(session).create(account, body.name, actor=CLI)
        return Environment.from_row(row).model_dump()

    fixes: Fixes = {
        errors.Conflict: f"choose another name; `keyhouse environment list --account {account}` "
        "lists the account's environments"
    }
    result = with_session(settings, work, fixes)
    if as_json:
        emit_json(result)
        return
    print(f"Created environment {result['id']} ({body.name}) in {account}.")


@environment_app.command("list")
def environment_list(account: AccountOpt, as_json: JsonOpt = False) -> None:
    """List an account's environments, newest first (as GET /environments)."""
    settings = _settings()

    async def work(session: DbSession, runtime: Runtime) -> list[dict[str, Any]]:
        await AccountService(session, runtime).get(account)
        rows = await EnvironmentService(session).list(account)
        return [Environment.from_row(row).model_dump() for row in rows]

    environments = with_session(settings, work)
    if as_json:
        emit_json({"environments": environments})
        return
    rows = [[e["id"], e["name"], e["createdAt"]] for e in environments]
    print_table(["id", "name", "created"], rows, whole={"id"})


# -- keys -------------------------------------------------------------------------------


@key_app.command("create")
def key_create(
    account: AccountOpt,
    name: Annotated[str, typer.Option("--name", help="A name for the key.")],
    key_type: Annotated[str, typer.Option("--type", metavar="secret|public", help="Key type.")],
    environment: Annotated[
        str | None,
        typer.Option("--environment", metavar="ENV_ID", help="Scope the key to this environment."),
    ] = None,
    expires_at: Annotated[
        str | None,
        typer.Option(
            "--expires-at",
            metavar="TIME",
            help="When the key stops working: ISO 8601 with a time zone, e.g. "
            "2027-01-31T00:00:00Z.",
        ),
    ] = None,
    scopes: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            metavar="SCOPE",
            help="Restrict the key to this scope (messages:send, keys:read, messages:*); "
            "repeat for more. None: the key is unrestricted.",
        ),
    ] = None,
    allow_ips: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-ip",
            metavar="CIDR",
            help="Allow the key only from this network (203.0.113.0/24); repeat for more.",
        ),
    ] = None,
    allow_origins: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-origin",
            metavar="ORIGIN",
            help="Public keys: allow the key only from this web origin "
            "(https://app.example.com, https://*.example.com); repeat for more.",
        ),
    ] = None,
    attributes: Annotated[
        list[str] | None,
        typer.Option(
            "--attribute",
            metavar="NAME=VALUE",
            help="Allow the key only with this attribute value (senderDomain=acme.com); "
            "repeat for more values or attributes.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key; prints the full key once."""
    settings = _settings()
    data: dict[str, Any] = {"name": name, "keyType": key_type}
    if environment is not None:
        data["environmentId"] = environment
    if expires_at is not None:
        data["expiresAt"] = expires_at
    if scopes:
        data["scopes"] = scopes
    restrictions = _restrictions_option(allow_ips, allow_origins, attributes)
    if restrictions:
        data["restrictions"] = restrictions
    # The API's own schema (POST /keys) checks the options.
    flags = {
        "name": "--name",
        "keyType": "--type",
        "environmentId": "--environment",
        "expiresAt": "--expires-at",
        "scopes": "--scope",
        "restrictions": "--allow-ip/--allow-origin/--attribute",
    }
    body = _validated(CreateKeyRequest, data, flags)

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        issued = await KeyService(session, runtime).create(
            account,
            name=body.name,
            key_type=body.keyType,
            environment_id=body.environmentId,
            expires_at=body.expiresAt,
            scopes=body.scopes,
            restrictions=None if body.restrictions is None else body.restrictions.to_data(),
            actor=CLI,
        )
        return issued_key_object(runtime, issued.row)

    fixes: Fixes = {
        errors.NotFound: f"`keyhouse environment list --account {account}` lists the "
        "account's environments",
        errors.BadRequest: lambda exc: (
            "give --expires-at a later time, with a time zone: 2027-01-31T00:00:00Z, say"
            if "expiresAt" in exc.message
            else _restriction_fix(exc)
        ),
        errors.KeyLimitReached: "revoke a key no longer used (`keyhouse key revoke KEY_ID`), "
        f"or raise the limit (`keyhouse account limits {account} --max-keys N`)",
    }
    result = with_session(settings, work, fixes)
    if as_json:
        emit_json(result)
        return
    _print_issued(f"Created {result['keyType']} key", result)


def _restrictions_option(
    allow_ips: list[str] | None, allow_origins: list[str] | None, attributes: list[str] | None
) -> dict[str, Any]:
    """``key create``'s --allow-ip, --allow-origin and --attribute as the API's
    ``restrictions`` object (members only when given)."""
    out: dict[str, Any] = {}
    if allow_ips:
        out["ipAllowlist"] = allow_ips
    if allow_origins:
        out["allowedOrigins"] = allow_origins
    if attributes:
        values: dict[str, list[str]] = {}
        for given in attributes:
            name, equals, value = given.partition("=")
            if not equals or not name or not value:
                # The value is not echoed: a mistyped option may hold a key.
                fail(
                    "validation_error",
                    "--attribute is NAME=VALUE, with both parts.",
                    "write e.g. --attribute senderDomain=acme.com (repeat it for more values)",
                )
            values.setdefault(name, []).append(value)
        out["attributes"] = values
    return out


def _restriction_fix(exc: errors.KeyhouseError) -> str:
    """The CLI's words for a scope or restriction the catalog or the rules refuse."""
    if "scopes" in exc.message or "attributes" in exc.message:
        return (
            "`keyhouse scopes list` shows the declared scopes and attributes; declare more "
            "with `keyhouse scopes set FILE.json`"
        )
    return _cli_fix(exc, {}) or "see `keyhouse key create --help`"


@key_app.command("list")
def key_list(
    account: AccountOpt,
    reveal: Annotated[bool, typer.Option("--reveal", help="Show full keys in the table.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List an account's keys, with their state.

    Newest first; keys masked unless --reveal. A key's state is active,
    expiring (it expires within 7 days, as a rolled key in its grace period
    does), expired or revoked.
    """
    settings = _settings()

    async def work(session: DbSession, runtime: Runtime) -> list[dict[str, Any]]:
        await AccountService(session, runtime).get(account)
        # --json is exactly GET /keys; the table masks unless asked.
        return await KeyService(session, runtime).list_objects(
            account, reveal=None if as_json else reveal, viewer=None
        )

    keys = with_session(settings, work)
    if as_json:
        emit_json({"keys": keys})
        return
    if not reveal:
        for k in keys:
            k["key"] = _mask(k["key"], k["keyType"], settings)
    _print_keys(keys)


def _mask(key: str, key_type: str, settings: Settings) -> str:
    fmt = KeyFormat(settings.key_prefix_secret, settings.key_prefix_public)
    return key if "…" in key else fmt.mask(key, "secret" if key_type == "secret" else "public")


@key_app.command("revoke")
def key_revoke(
    key_id: KeyIdArg,
    force: Annotated[
        bool, typer.Option("--force", help="Revoke even the account's last secret key.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key at once (idempotent)."""
    settings = _settings()

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        service = KeyService(session, runtime)
        row = await service.revoke(None, key_id, force=force, actor=CLI)
        return key_object(runtime, row, viewer=None)

    result = with_session(settings, work)
    if as_json:
        emit_json(result)
        return
    print(f"Revoked key {result['id']} ({result['name']}).")


@key_app.command("roll")
def key_roll(
    key_id: KeyIdArg,
    grace: Annotated[
        int,
        typer.Option(
            "--grace",
            min=0,
            max=MAX_ROLL_GRACE_SECONDS,
            help=f"Seconds the old key keeps working (0-{MAX_ROLL_GRACE_SECONDS}).",
        ),
    ] = DEFAULT_ROLL_GRACE_SECONDS,
    as_json: JsonOpt = False,
) -> None:
    """Replace a key with a new one.

    The old one works for the grace period.
    """
    settings = _settings()

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        service = KeyService(session, runtime)
        issued = await service.roll(None, key_id, grace_seconds=grace, actor=CLI)
        return issued_key_object(runtime, issued.row)

    fixes: Fixes = {
        errors.Conflict: "create a new key instead: `keyhouse key create --account ACCOUNT_ID "
        "--name NAME --type secret|public`"
    }
    result = with_session(settings, work, fixes)
    if as_json:
        emit_json(result)
        return
    _print_issued(f"Rolled {key_id} into", result)


@key_app.command("rename")
def key_rename(
    key_id: KeyIdArg,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The new name.")],
    as_json: JsonOpt = False,
) -> None:
    """Rename a key."""
    settings = _settings()
    body = _validated(RenameKeyRequest, {"name": name}, {"name": "NAME"})

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        service = KeyService(session, runtime)
        row = await service.rename(None, key_id, body.name, actor=CLI)
        return key_object(runtime, row, viewer=None)

    result = with_session(settings, work)
    if as_json:
        emit_json(result)
        return
    print(f"Renamed key {result['id']} to {result['name']!r}.")


# -- encryption-key rotation ------------------------------------------------------------


@key_app.command("reencrypt")
def key_reencrypt(
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", min=1, max=10_000, help="Keys per committed transaction."),
    ] = DEFAULT_BATCH_SIZE,
    as_json: JsonOpt = False,
) -> None:
    """Move every stored key under the newest encryption key (the first of
    KEYHOUSE_ENCRYPTION_KEYS), so that an older one can be removed.

    Safe while servers run. Resumable: each batch is committed as it goes, and
    a rerun skips keys moved already. Keys that cannot be read are listed and
    left as they are, and so are keys other writes kept busy to the end (run
    again for those); either makes the exit status 1.
    """
    settings = _settings()
    require_keyhouse(settings)

    def progress(batch: Batch) -> None:
        print(f"keyhouse: {batch.moved} keys moved, up to {batch.last_id}", file=sys.stderr)

    async def work() -> Report:
        runtime = Runtime.build(settings, generate_secrets=False)
        try:
            await _schema_ready(settings, runtime)
            return await reencrypt_all(
                runtime, batch_size=batch_size, on_batch=None if as_json else progress
            )
        finally:
            await runtime.close()

    report = run(settings, work)
    if as_json:
        emit_json(report.to_json())
    else:
        print(f"Moved {report.moved} keys under encryption key {report.enc_kid}.")
        if report.unreadable:
            # One line per key, never cut: the ids are for copying.
            print(f"{len(report.unreadable)} keys cannot be read and were left as they are:")
            for u in report.unreadable:
                where = f"account {u.account_id}, encryption key {u.enc_kid}"
                print(f"  {u.key_id} ({where}): {u.reason}")
        if report.busy:
            print(f"{len(report.busy)} keys were being written all along; run it again:")
            for key_id in report.busy:
                print(f"  {key_id}")
    if not report.complete:
        raise typer.Exit(1)


# -- events and the admin token -------------------------------------------------------


@app.command("events")
def events(
    account: AccountOpt,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Events to show.")] = 20,
    starting_after: Annotated[
        str | None,
        typer.Option(
            "--starting-after", metavar="EVENT_ID", help="Show events after this event id."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show an account's audit log, newest first."""
    settings = _settings()
    # As GET /events refuses a startingAfter that is no event id (400
    # validation_error): before, `--starting-after nope` listed every event.
    if starting_after is not None and not is_id(starting_after, "evt"):
        fail(
            "validation_error",
            "--starting-after is an event id (evt_ and 26 characters of 0-9 A-Z)",
            f"`keyhouse events --account {account}` shows event ids",
        )

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        await AccountService(session, runtime).get(account)
        rows, has_more = await AuditService(session).list(
            account, limit=limit, starting_after=starting_after
        )
        return {"events": [event_object(r) for r in rows], "hasMore": has_more}

    result = with_session(settings, work)
    if as_json:
        emit_json(result)
        return
    rows = [
        [
            e["id"],
            e["type"],
            e.get("keyId", "-"),
            e.get("environmentId", "-"),
            e["actor"]["type"] + (f" {e['actor']['id']}" if "id" in e["actor"] else ""),
            e["createdAt"],
        ]
        for e in result["events"]
    ]
    headers = ["id", "type", "key", "environment", "actor", "created"]
    print_table(headers, rows, whole={"id", "key", "environment", "actor"})
    if result["hasMore"] and rows:
        print(f"More: keyhouse events --account {account} --starting-after {rows[-1][0]}")


@app.command("admin-token")
def admin_token(as_json: JsonOpt = False) -> None:
    """Print the operator's admin token in force.

    The API's operator routes (/admin/..., /verify) take it.
    """
    settings = _settings()
    require_keyhouse(settings)
    try:
        _, tokens = load_secrets(settings, generate=False)
    except errors.ConfigurationError as exc:
        fail("configuration_error", str(exc))
    if as_json:
        emit_json({"adminToken": tokens.first})
    else:
        print(tokens.first)


# -- the scope catalog (issue 15) ------------------------------------------------------

scopes_app = typer.Typer(
    help="The platform's scope catalog: the scopes and attributes keys may carry.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(scopes_app, name="scopes")

_SCOPE_FIXES: Fixes = {
    errors.Conflict: (
        "keep it in the file, or first revoke the keys that carry it (`keyhouse key revoke KEY_ID`)"
    ),
}


def _catalog_file(path: Path) -> PutCatalogRequest:
    """FILE.json as PUT /admin/scopes takes it, or the one-line failure naming the member."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail("usage_error", f"cannot read {path}: {_first_line(exc)}", "give a JSON file's path")
    try:
        return PutCatalogRequest.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "the file"
        message = str(err["msg"]).removeprefix("Value error, ")
        fail(
            "validation_error",
            f"{path}: {where}: {message}",
            'the file is {"scopes": [{"name": "messages:send", "description": "..."}], '
            '"attributes": [{"name": "senderDomain", "description": "..."}]}',
        )


def _print_catalog(catalog: Mapping[str, Any]) -> None:
    rows = [
        [s["name"], "built-in" if s["builtin"] else "declared", s["description"]]
        for s in catalog["scopes"]
    ]
    print_table(["scope", "kind", "description"], rows, whole={"scope"})
    if catalog["attributes"]:
        rows = [[a["name"], a["description"]] for a in catalog["attributes"]]
        print_table(["attribute", "description"], rows, whole={"attribute"})


@scopes_app.command("set")
def scopes_set(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE.json",
            help='{"scopes": [{"name", "description"}], "attributes": [...]}; - for stdin.',
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Replace the scope catalog with FILE.json (as PUT /admin/scopes)."""
    settings = _settings()
    body = _catalog_file(file)

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        entries, change = await ScopeService(session).replace(
            [ScopeEntryValue(s.name, s.description) for s in body.scopes],
            [ScopeEntryValue(a.name, a.description) for a in body.attributes],
            actor=CLI,
        )
        return {"catalog": catalog_object(entries), "change": change.to_json()}

    result = with_session(settings, work, _SCOPE_FIXES)
    if as_json:
        emit_json(result["catalog"])
        return
    declared = [s for s in result["catalog"]["scopes"] if not s["builtin"]]
    attributes = result["catalog"]["attributes"]
    summary = f"{len(declared)} scopes, {len(attributes)} attributes"
    if not result["change"]:
        print(f"Scope catalog unchanged ({summary}).")
        return
    print(f"Scope catalog set: {summary}.")
    for member, part in result["change"].items():
        for what, names in part.items():
            print(f"  {member} {what}: {', '.join(names)}")


@scopes_app.command("list")
def scopes_list(as_json: JsonOpt = False) -> None:
    """List the scopes keys may carry (built-ins first) and the attributes."""
    settings = _settings()

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        return catalog_object(await ScopeService(session).get())

    catalog = with_session(settings, work)
    if as_json:
        emit_json(catalog)
        return
    _print_catalog(catalog)


# -- the entry point ------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command; a failure is one line on stderr (one JSON object with --json)."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    try:
        status = app(args=args, prog_name="keyhouse", standalone_mode=False)
    except CliError as exc:
        print(exc.as_json() if as_json else exc.line(), file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors: Typer's click
        show = getattr(exc, "show", None)
        if not as_json and show is not None:
            show()
        elif not as_json:
            print(f"keyhouse: {exc.format_message()}", file=sys.stderr)
        else:
            ctx = getattr(exc, "ctx", None)
            command = ctx.command_path if ctx is not None else "keyhouse"
            error = CliError("usage_error", exc.format_message(), f"see `{command} --help`")
            print(error.as_json(), file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("keyhouse: aborted", file=sys.stderr)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)
