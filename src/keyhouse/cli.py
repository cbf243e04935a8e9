"""The ``keyhouse`` command: serve, migrate, and manage accounts and keys.

It works on the configured database directly (the same services as the
API), so a new operator needs no token to bootstrap. ``--json`` prints one
JSON object on stdout and nothing else; people get Rich tables with masked
keys. Every failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from alembic.util.exc import CommandError as AlembicCommandError
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from keyhouse import errors
from keyhouse.accounts.schemas import Account, LimitsUpdate
from keyhouse.accounts.service import AccountService
from keyhouse.admin_tokens import load_admin_tokens
from keyhouse.audit.service import CLI, AuditService, event_object
from keyhouse.config import (
    MAX_WORKERS,
    PLAN_LIMIT_MAX,
    Settings,
    load_settings,
    settings_error_line,
)
from keyhouse.db.migrate import migrate
from keyhouse.db.session import DbSession
from keyhouse.environments.schemas import Environment
from keyhouse.environments.service import EnvironmentService
from keyhouse.keys import changes
from keyhouse.keys.crypto import load_keyring
from keyhouse.keys.format import KeyFormat, KeyType
from keyhouse.keys.presenter import issued_key_object, key_object
from keyhouse.keys.rotation import DEFAULT_BATCH_SIZE, Batch, Report, reencrypt_all
from keyhouse.keys.schemas import DEFAULT_ROLL_GRACE_SECONDS, MAX_ROLL_GRACE_SECONDS
from keyhouse.keys.service import KeyService
from keyhouse.limits.plan import current_period
from keyhouse.limits.repository import UsageRepository
from keyhouse.limits.service import usage_object
from keyhouse.runtime import Runtime
from keyhouse.schemas import Name
from keyhouse.serving import check_port, serve_socket, serve_workers, tcp_socket
from keyhouse.timeutil import utcnow

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="keyhouse",
    help="keyhouse: a self-hosted API key service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
account_app = typer.Typer(help="Accounts (the operator's customers).", no_args_is_help=True)
environment_app = typer.Typer(help="Environments inside an account.", no_args_is_help=True)
key_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(account_app, name="account")
app.add_typer(environment_app, name="environment")
app.add_typer(key_app, name="key")

stderr = Console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object, nothing else.")]


def fail(message: str) -> NoReturn:
    """One line on stderr, exit status 1."""
    print(f"keyhouse: {message}", file=sys.stderr)
    raise typer.Exit(1)


def _settings() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        fail(settings_error_line(exc))


def _db_error_line(settings: Settings, exc: Exception) -> str:
    reason = getattr(exc, "orig", None) or exc
    first = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    where = make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)
    return f"cannot use the database at {where}: {first}"


def run(settings: Settings, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` with every failure turned into one line and exit status 1."""
    try:
        return asyncio.run(work())
    except errors.KeyhouseError as exc:
        fix = f" ({exc.fix})" if exc.fix else ""
        fail(f"{exc.code}: {exc.message}{fix}")
    except errors.ConfigurationError as exc:
        fail(str(exc))
    except (OperationalError, DBAPIError, OSError) as exc:
        fail(_db_error_line(settings, exc))
    except AlembicCommandError as exc:
        # E.g. a database migrated by a newer keyhouse than this one.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "migration failed"
        fail(f"cannot migrate the database: {first}")


def with_session(settings: Settings, work: Callable[[DbSession, Runtime], Awaitable[T]]) -> T:
    """Migrate, then run ``work`` in one transaction, as one API request would."""

    async def _go() -> T:
        await migrate(settings)
        runtime = Runtime.build(settings)
        try:
            async with changes.session(runtime, write=True) as session:
                return await work(session, runtime)
        finally:
            await runtime.close()

    return run(settings, _go)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _name(value: str) -> str:
    try:
        return TypeAdapter(Name).validate_python(value)
    except ValidationError as exc:
        fail(f"validation_error: name {exc.errors()[0]['msg'].lower()}")


# -- serve and migrate --------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=MAX_WORKERS, help="Worker processes.")] = 1,
) -> None:
    """Migrate the database, then serve the API (logs go to stderr)."""
    settings = _settings()

    async def _prepare() -> None:
        # Before any worker starts: the generated encryption key is written
        # once, and the schema is at head.
        load_keyring(
            settings.encryption_keys.get_secret_value() if settings.encryption_keys else None,
            settings.data_dir,
        )
        load_admin_tokens(
            settings.admin_tokens.get_secret_value() if settings.admin_tokens else None,
            settings.data_dir,
        )
        await migrate(settings)

    run(settings, _prepare)
    if not settings.admin_tokens:
        print(
            "keyhouse: operator API token: run `keyhouse admin-token` to print it",
            file=sys.stderr,
        )
    # keyhouse writes its own access log line (no query string, tracking id).
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,
        "log_level": settings.log_level,
        "server_header": False,
    }
    if workers > 1:
        # The workers read their settings from the environment: tell them how
        # many they are, so usage is counted where all of them see it.
        os.environ["KEYHOUSE_WORKERS"] = str(workers)
        if not settings.redis_url:
            print(
                f"keyhouse: warning: {workers} workers without KEYHOUSE_REDIS_URL: the monthly "
                "quota is counted in the database (exact, one write per request); rate "
                "limits hold per worker",
                file=sys.stderr,
            )
        try:
            check_port(host, port)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror}")
        serve_workers(host, port, workers, options)
    else:
        # The worker's way, in this process: its own IPPROTO_TCP socket (bound
        # here, so a taken port is one line and exit 1) and serve_socket.
        try:
            sock = tcp_socket(host, port, reuse_port=False)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror}")
        from keyhouse.app import create_app

        print(
            f"keyhouse: serving on http://{host}:{sock.getsockname()[1]} (pid {os.getpid()})",
            file=sys.stderr,
        )
        serve_socket(sock, {**options, "app": create_app(settings)})


@app.command("migrate")
def migrate_command() -> None:
    """Upgrade the database schema to the latest version."""
    settings = _settings()
    run(settings, lambda: migrate(settings))
    print("keyhouse: database is up to date", file=sys.stderr)


# -- accounts -------------------------------------------------------------------------


@account_app.command("create")
def account_create(
    name: Annotated[str, typer.Option("--name", help="The account's name.")],
    as_json: JsonOpt = False,
) -> None:
    """Create an account and its first account-wide secret key (shown once here)."""
    settings = _settings()
    name = _name(name)

    async def work(session: DbSession, runtime: Runtime) -> dict[str, str]:
        new = await AccountService(session, runtime).create(name, actor=CLI)
        return {"accountId": new.account.id, "keyId": new.key.row.id, "key": new.key.plaintext}

    result = with_session(settings, work)
    if as_json:
        emit_json(result)
        return
    out = Console()
    out.print(f"Created account [bold]{result['accountId']}[/bold] ({name}).")
    out.print(f"Its secret key [bold]{result['keyId']}[/bold]:")
    out.print(result["key"], markup=False, highlight=False, soft_wrap=True)


# -- environments -------------------------------------------------------------------


@environment_app.command("create")
def environment_create(
    account: Annotated[str, typer.Option("--account", help="Account id (acc_...).")],
    name: Annotated[str, typer.Option("--name", help="Name, unique in the account.")],
    as_json: JsonOpt = False,
) -> None:
    """Create an environment in an account."""
    settings = _settings()
    name = _name(name)

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        row = await EnvironmentService(session).create(account, name, actor=CLI)
        return Environment.from_row(row).model_dump()

    result = with_session(settings, work)
    if as_json:
        emit_json(result)
        return
    Console().print(f"Created environment [bold]{result['id']}[/bold] ({name}) in {account}.")


# -- keys -------------------------------------------------------------------------------


def _print_keys(keys: list[dict[str, Any]]) -> None:
    table = Table("id", "name", "type", "environment", "key", "revoked", "created", "last used")
    for k in keys:
        table.add_row(
            k["id"],
            k["name"],
            k["keyType"],
            k.get("environmentId", "-"),
            k["key"],
            "yes" if k["revoked"] else "no",
            k["createdAt"],
            k.get("lastUsedAt", "-"),
        )
    Console().print(table)


@key_app.command("create")
def key_create(
    account: Annotated[str, typer.Option("--account", help="Account id (acc_...).")],
    name: Annotated[str, typer.Option("--name", help="A name for the key.")],
    key_type: Annotated[str, typer.Option("--type", help="secret or public.")],
    environment: Annotated[
        str | None, typer.Option("--environment", help="Scope the key to this environment.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key; prints the full key once."""
    settings = _settings()
    name = _name(name)
    if key_type not in ("secret", "public"):
        fail("validation_error: --type is 'secret' or 'public'")
    typed: KeyType = "secret" if key_type == "secret" else "public"

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        issued = await KeyService(session, runtime).create(
            account, name=name, key_type=typed, environment_id=environment, actor=CLI
        )
        return issued_key_object(runtime, issued.row)

    result = with_session(settings, work)
    if as_json:
        emit_json(result)
        return
    Console().print(f"Created {typed} key [bold]{result['id']}[/bold]:")
    Console().print(result["key"], markup=False, highlight=False, soft_wrap=True)


@key_app.command("list")
def key_list(
    account: Annotated[str, typer.Option("--account", help="Account id (acc_...).")],
    reveal: Annotated[bool, typer.Option("--reveal", help="Show full keys in the table.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List an account's keys, newest first (keys masked unless --reveal)."""
    settings = _settings()

    async def work(session: DbSession, runtime: Runtime) -> list[dict[str, Any]]:
        await AccountService(session, runtime).get(account)
        # --json is exactly GET /keys; the table masks unless asked.
        return await KeyService(session, runtime).list_objects(
            account, reveal=None if as_json else reveal
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
    key_id: Annotated[str, typer.Argument(help="Key id (key_...).")],
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
        return key_object(runtime, row)

    result = with_session(settings, work)
    if as_json:
        emit_json(result)
        return
    Console().print(f"Revoked key [bold]{result['id']}[/bold] ({result['name']}).")


@key_app.command("roll")
def key_roll(
    key_id: Annotated[str, typer.Argument(help="Key id (key_...).")],
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
    """Replace a key with a new one; the old one works for the grace period."""
    settings = _settings()

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        service = KeyService(session, runtime)
        issued = await service.roll(None, key_id, grace_seconds=grace, actor=CLI)
        return issued_key_object(runtime, issued.row)

    result = with_session(settings, work)
    if as_json:
        emit_json(result)
        return
    Console().print(f"Rolled {key_id} into [bold]{result['id']}[/bold]:")
    Console().print(result["key"], markup=False, highlight=False, soft_wrap=True)


@key_app.command("rename")
def key_rename(
    key_id: Annotated[str, typer.Argument(help="Key id (key_...).")],
    name: Annotated[str, typer.Argument(help="The new name.")],
    as_json: JsonOpt = False,
) -> None:
    """Rename a key."""
    settings = _settings()
    name = _name(name)

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        service = KeyService(session, runtime)
        row = await service.rename(None, key_id, name, actor=CLI)
        return key_object(runtime, row)

    result = with_session(settings, work)
    if as_json:
        emit_json(result)
        return
    Console().print(f"Renamed key [bold]{result['id']}[/bold] to {result['name']!r}.")


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

    def progress(batch: Batch) -> None:
        print(f"keyhouse: {batch.moved} keys moved, up to {batch.last_id}", file=sys.stderr)

    async def work() -> Report:
        await migrate(settings)
        runtime = Runtime.build(settings)
        try:
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
    table = Table("id", "name", "max keys", "monthly requests", "rate/s", "burst", "created")
    for a in accounts:
        limits = a["limits"]
        table.add_row(
            a["id"],
            a["name"],
            *(_limit(limits[m]) for m in ("maxKeys", "monthlyRequests", "ratePerSecond", "burst")),
            a["createdAt"],
        )
    Console().print(table)


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def _limit_value(raw: str | None, name: str, minimum: int) -> int | None:
    if raw is None or raw.lower() in {"none", "null", "unlimited"}:
        return None
    try:
        value = int(raw)
    except ValueError:
        fail(f"validation_error: {name} is an integer or 'unlimited'")
    if not minimum <= value <= PLAN_LIMIT_MAX:
        fail(f"validation_error: {name} is {minimum} to {PLAN_LIMIT_MAX}, or 'unlimited'")
    return value


@account_app.command("limits")
def account_limits(
    account: Annotated[str, typer.Argument(help="Account id (acc_...).")],
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
    given = {
        "maxKeys": (max_keys, "--max-keys", 0),
        "monthlyRequests": (monthly_requests, "--monthly-requests", 0),
        "ratePerSecond": (rate_per_second, "--rate-per-second", 1),
        "burst": (burst, "--burst", 1),
    }
    changes = {
        member: _limit_value(raw, flag, minimum)
        for member, (raw, flag, minimum) in given.items()
        if raw is not None
    }
    limits = LimitsUpdate(**changes) if changes else None

    async def work(session: DbSession, runtime: Runtime) -> dict[str, Any]:
        service = AccountService(session, runtime)
        row = await service.update(account, limits=limits, actor=CLI)
        return Account.from_row(row).to_json()

    result = with_session(settings, work)
    if as_json:
        emit_json(result)
        return
    for member, value in result["limits"].items():
        Console().print(f"{member}: {_limit(value)}")


@account_app.command("usage")
def account_usage(
    account: Annotated[str, typer.Argument(help="Account id (acc_...).")],
    as_json: JsonOpt = False,
) -> None:
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
    Console().print(
        f"{account}: {result['requests']} requests{limit} in {result['period']}; "
        f"resets at {result['resetsAt']}"
    )


@app.command("events")
def events(
    account: Annotated[str, typer.Option("--account", help="Account id (acc_...).")],
    limit: Annotated[int, typer.Option(min=1, max=100, help="Events to show.")] = 20,
    starting_after: Annotated[
        str | None, typer.Option("--starting-after", help="Show events after this event id.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """An account's audit log, newest first (as GET /events)."""
    settings = _settings()

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
    table = Table("id", "type", "key", "environment", "actor", "created")
    for e in result["events"]:
        actor = e["actor"]["type"] + (f" {e['actor']['id']}" if "id" in e["actor"] else "")
        table.add_row(
            e["id"],
            e["type"],
            e.get("keyId", "-"),
            e.get("environmentId", "-"),
            actor,
            e["createdAt"],
        )
    Console().print(table)


@app.command("admin-token")
def admin_token(as_json: JsonOpt = False) -> None:
    """Print the operator's admin token in force (generated now if none exists yet)."""
    settings = _settings()
    try:
        tokens = load_admin_tokens(
            settings.admin_tokens.get_secret_value() if settings.admin_tokens else None,
            settings.data_dir,
        )
    except errors.ConfigurationError as exc:
        fail(str(exc))
    if as_json:
        emit_json({"adminToken": tokens.first})
    else:
        print(tokens.first)


def main() -> None:
    app()
