"""``keyhouse scopes set FILE.json`` and ``keyhouse scopes list``: the service of
``PUT``/``GET /admin/scopes``, run in this process (CliRunner) on a SQLite data
directory (the service is tested on both engines in test_endpoints.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from keyhouse.app import create_app
from keyhouse.cli import CliError
from keyhouse.cli import app as cli
from keyhouse.config import Settings
from keyhouse.keys.restrictions import BUILTIN_SCOPES
from keyhouse.models import Event
from keyhouse.runtime import Runtime
from tests.factories import AccountWithKey, create_account, insert_key, settings_env

pytestmark = pytest.mark.sqlite_only

CATALOG = {
    "scopes": [
        {"name": "messages:send", "description": "Send messages."},
        {"name": "domains:read", "description": "List sending domains."},
    ],
    "attributes": [{"name": "senderDomain", "description": "The From: domain."}],
}


@pytest.fixture
def started(settings: Settings) -> Settings:
    """A keyhouse whose secrets exist, as after `keyhouse init` (its tables are migrated)."""
    asyncio.run(Runtime.build(settings, generate_secrets=True).close())
    return settings


def keyhouse(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=settings_env(settings))


def failure(result: Result) -> CliError:
    """The command's CliError (main() prints it as one line and exits 1)."""
    assert isinstance(result.exception, CliError), repr(result.exception)
    return result.exception


def write(tmp_path: Path, body: Any, name: str = "catalog.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(body) if not isinstance(body, str) else body)
    return str(path)


async def _with_app(settings: Settings, work: Any) -> Any:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        return await work(runtime)


def account_with_scoped_key(settings: Settings, scopes: list[str]) -> tuple[AccountWithKey, str]:
    async def work(runtime: Runtime) -> tuple[AccountWithKey, str]:
        account = await create_account(runtime)
        async with runtime.db.session(write=True) as session:
            row = insert_key(session, account.account_id)
            row.scopes = scopes
        return account, row.id

    result: tuple[AccountWithKey, str] = asyncio.run(_with_app(settings, work))
    return result


def scope_events(settings: Settings) -> list[Event]:
    async def work(runtime: Runtime) -> list[Event]:
        async with runtime.db.session(write=False) as session:
            rows = await session.scalars(select(Event).where(Event.type == "scopes.updated"))
            return list(rows.all())

    events: list[Event] = asyncio.run(_with_app(settings, work))
    return events


def test_list_set_and_list_again(started: Settings, tmp_path: Path) -> None:
    settings = started
    listed = keyhouse(settings, "scopes", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert json.loads(listed.stdout) == {
        "scopes": [
            {"name": n, "description": d, "builtin": True} for n, d in BUILTIN_SCOPES.items()
        ],
        "attributes": [],
    }

    done = keyhouse(settings, "scopes", "set", write(tmp_path, CATALOG))
    assert done.exit_code == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Scope catalog set: 2 scopes, 1 attributes.",
        "  scopes added: domains:read, messages:send",
        "  attributes added: senderDomain",
    ]
    again = keyhouse(settings, "scopes", "set", write(tmp_path, CATALOG), "--json")
    assert again.exit_code == 0, again.stderr
    answer = json.loads(again.stdout)
    assert [s["name"] for s in answer["scopes"] if not s["builtin"]] == [
        "domains:read",
        "messages:send",
    ]
    unchanged = keyhouse(settings, "scopes", "set", write(tmp_path, CATALOG))
    assert unchanged.stdout == "Scope catalog unchanged (2 scopes, 1 attributes).\n"

    table = keyhouse(settings, "scopes", "list")
    assert table.exit_code == 0, table.stderr
    for name in [*BUILTIN_SCOPES, "messages:send", "domains:read", "senderDomain"]:
        assert name in table.stdout
    events = scope_events(settings)
    assert len(events) == 1
    assert events[0].actor_type == "cli"
    assert events[0].account_id is None


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("{not json", "catalog.json"),
        ({"scopes": [{"name": "messages:send", "extra": 1}]}, "scopes.0.extra"),
        ({"scopes": [{"name": "Messages:Send"}]}, "scopes[0].name"),
        ({"scopes": [{"name": "keys:delete"}]}, "scopes[0].name"),
    ],
)
def test_a_bad_file_is_a_validation_error_naming_the_member(
    started: Settings, tmp_path: Path, body: Any, says: str
) -> None:
    settings = started
    error = failure(keyhouse(settings, "scopes", "set", write(tmp_path, body)))
    assert error.code == "validation_error"
    assert says in error.message
    assert scope_events(settings) == []


def test_a_missing_file(settings: Settings, tmp_path: Path) -> None:
    error = failure(keyhouse(settings, "scopes", "set", str(tmp_path / "nope.json")))
    assert error.code == "usage_error"
    assert "nope.json" in error.message


def test_removing_a_scope_a_key_carries_names_the_key_and_a_command(
    started: Settings, tmp_path: Path
) -> None:
    settings = started
    assert keyhouse(settings, "scopes", "set", write(tmp_path, CATALOG)).exit_code == 0
    _, key_id = account_with_scoped_key(settings, ["messages:send"])
    smaller = {"scopes": [{"name": "domains:read"}], "attributes": CATALOG["attributes"]}
    error = failure(keyhouse(settings, "scopes", "set", write(tmp_path, smaller)))
    assert error.code == "conflict"
    assert key_id in error.message
    assert error.fix is not None
    assert "keyhouse key revoke" in error.fix
    assert "PATCH /" not in error.fix
