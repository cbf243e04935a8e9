"""The CLI for people (README, "CLI"): tables that never cut an id or a key,
each key's state, errors that name CLI commands, JSON errors with --json.

Run for real as subprocesses on a SQLite data directory (the services they
call are the API's, tested on both engines). No full key reaches the test
output: outputs are searched, never shown (see ``tests/test_cli.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyhouse import __version__
from keyhouse.audit.service import CLI, AuditService
from keyhouse.cli import EXPIRING_WITHIN
from keyhouse.config import Settings
from keyhouse.keys.service import KeyService
from keyhouse.runtime import Runtime
from tests.factories import create_environment, create_key, set_expiry, set_limits
from tests.test_cli import CliResult, expect_ok, expect_one_line_failure, keyhouse, scrub
from tests.test_cli_lifecycle import api_get, seed_account, with_runtime

pytestmark = pytest.mark.sqlite_only

ID = re.compile(r"\b(?:acc|env|key|evt)_[0-9A-Za-z]+")
KEY = re.compile(r"\b(?:sk|pk)_[0-9A-Za-z…]+")
# What an API fix says and a CLI fix must not: a route, a query parameter, the docs.
HTTP_HINT = re.compile(r"\b(?:GET|POST|PATCH|PUT|DELETE) /|\?[A-Za-z]+=|/docs\b")


def ids_in(text: str) -> set[str]:
    return set(ID.findall(text))


def expect_whole_ids(out: str, expected: set[str]) -> None:
    """Every id printed is a whole id we know, and every id we expect is printed."""
    printed = ids_in(out)
    cut = sorted(printed - expected)
    assert not cut, f"ids printed cut or unknown: {cut}"
    missing = sorted(expected - printed)
    assert not missing, f"ids not printed whole: {missing}"


def blocks(out: str) -> dict[str, dict[str, str]]:
    """The expanded layout (one ``-[ n ]`` block per row) by the row's id."""
    rows: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("-[ "):
            current = {}
            continue
        label, _, value = line.partition("  ")
        current[label.strip()] = value.strip()
        if label.strip() == "id":
            rows[value.strip()] = current
    return rows


class Seeded:
    """An account with a key in each state, an environment, and events."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        acc = seed_account(settings)
        self.account = acc
        now = datetime.now(UTC)

        async def seed(runtime: Runtime) -> dict[str, Any]:
            env = await create_environment(runtime, acc.account_id, "staging")
            scoped = await create_key(runtime, acc.account_id, environment_id=env.id, name="s")
            soon = await create_key(
                runtime, acc.account_id, key_type="public", expires_at=now + timedelta(days=1)
            )
            later = await create_key(runtime, acc.account_id, expires_at=now + timedelta(days=30))
            gone = await create_key(runtime, acc.account_id, expires_at=now + timedelta(days=1))
            await set_expiry(runtime, gone.row.id, now - timedelta(minutes=1))
            async with runtime.db.session(write=True) as session:
                await KeyService(session, runtime).revoke(None, scoped.row.id, actor=CLI)
                events, _ = await AuditService(session).list(acc.account_id, limit=100)
            return {
                "env": env.id,
                "scoped": scoped,
                "soon": soon,
                "later": later,
                "gone": gone,
                "events": {e.id for e in events},
            }

        made = with_runtime(settings, seed)
        self.env_id: str = made["env"]
        self.keys = {name: made[name] for name in ("scoped", "soon", "later", "gone")}
        self.event_ids: set[str] = made["events"]

    @property
    def key_ids(self) -> set[str]:
        return {self.account.key_id, *(k.row.id for k in self.keys.values())}

    @property
    def plaintexts(self) -> list[str]:
        return [self.account.key, *(k.plaintext for k in self.keys.values())]


@pytest.fixture
def seeded(settings: Settings) -> Seeded:
    return Seeded(settings)


def cli(seeded: Seeded, *args: str, columns: int = 80, **env: str) -> CliResult:
    return keyhouse(seeded.settings.data_dir, *args, COLUMNS=str(columns), **env)


class TestTables:
    def test_key_list_at_80_columns_keeps_ids_whole_and_shows_states(self, seeded: Seeded) -> None:
        acc = seeded.account.account_id
        result = cli(seeded, "key", "list", "--account", acc)
        expect_ok(result)
        expect_whole_ids(result.out, seeded.key_ids | {seeded.env_id})
        widest = max(len(line) for line in result.out.splitlines())
        assert widest <= 80, f"a line of {widest} columns"
        leaked = any(key in result.out for key in seeded.plaintexts)
        assert not leaked, "key list without --reveal printed a full key"
        rows = blocks(result.out)
        states = {key_id: row["state"] for key_id, row in rows.items()}
        k = seeded.keys
        assert states == {
            seeded.account.key_id: "active",
            k["scoped"].row.id: "revoked",
            k["soon"].row.id: "expiring",
            k["later"].row.id: "active",
            k["gone"].row.id: "expired",
        }
        assert rows[k["scoped"].row.id]["environment"] == seeded.env_id
        assert rows[k["later"].row.id]["expires"].endswith("Z")
        assert rows[seeded.account.key_id]["expires"] == "-"

    def test_reveal_shows_every_key_whole_at_80_columns(self, seeded: Seeded) -> None:
        acc = seeded.account.account_id
        result = cli(seeded, "key", "list", "--account", acc, "--reveal")
        expect_ok(result)
        expect_whole_ids(result.out, seeded.key_ids | {seeded.env_id})
        lines = result.out.splitlines()
        whole = [any(key in line for line in lines) for key in seeded.plaintexts]
        assert all(whole), f"keys not printed whole on one line: {whole}"

    def test_a_wide_terminal_gets_one_table_row_per_key(self, seeded: Seeded) -> None:
        acc = seeded.account.account_id
        result = cli(seeded, "key", "list", "--account", acc, "--reveal", columns=250)
        expect_ok(result)
        expect_whole_ids(result.out, seeded.key_ids | {seeded.env_id})
        lines = result.out.splitlines()
        for issued in seeded.keys.values():
            row = [line for line in lines if issued.row.id in line]
            assert len(row) == 1, f"{issued.row.id} is not on one table row"
            has_key = issued.plaintext in row[0]
            assert has_key, f"the row of {issued.row.id} does not hold its whole key"
        gone_row = next(line for line in lines if seeded.keys["gone"].row.id in line)
        assert " expired " in gone_row

    @pytest.mark.parametrize("command", ["account list", "environment list", "events"])
    def test_other_tables_at_80_columns_keep_ids_whole(self, seeded: Seeded, command: str) -> None:
        acc = seeded.account.account_id
        args = command.split() + ([] if command == "account list" else ["--account", acc])
        result = cli(seeded, *args)
        expect_ok(result)
        expected = {
            "account list": {acc},
            "environment list": {seeded.env_id},
            # Events name the keys and the environment they are about.
            "events": seeded.event_ids | seeded.key_ids | {seeded.env_id},
        }[command]
        printed = ids_in(result.out)
        cut = sorted(printed - expected - {acc})
        assert not cut, f"ids printed cut or unknown: {cut}"
        missing = sorted((expected if command != "events" else seeded.event_ids) - printed)
        assert not missing, f"ids not printed whole: {missing}"

    def test_expiring_means_within_the_longest_roll_grace(self) -> None:
        # A rolled key in its grace period (at most MAX_ROLL_GRACE_SECONDS) is "expiring".
        assert timedelta(days=7) == EXPIRING_WITHIN


class TestKeyCommands:
    def test_key_create_expires_at(self, seeded: Seeded) -> None:
        acc = seeded.account.account_id
        when = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
        result = cli(
            seeded,
            "key",
            "create",
            "--account",
            acc,
            "--name",
            "trial",
            "--type",
            "public",
            "--expires-at",
            when.isoformat(),
            "--json",
        )
        expect_ok(result)
        created = result.json()
        assert created["expiresAt"] == when.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        status, shown = api_get(
            seeded.settings.data_dir, f"/keys/{created['id']}", seeded.account.auth
        )
        assert status == 200
        assert shown["expiresAt"] == created["expiresAt"]

        for value, words in [
            ("2027-01-31T00:00:00", "--expires-at"),  # no time zone, as the API refuses
            ("next tuesday", "--expires-at"),
            ("2020-01-01T00:00:00Z", "--expires-at a later time"),  # the past
        ]:
            result = cli(
                seeded,
                "key",
                "create",
                "--account",
                acc,
                "--name",
                "x",
                "--type",
                "public",
                "--expires-at",
                value,
            )
            line = expect_one_line_failure(result)
            assert "validation_error" in line, line
            assert words in line, line

    def test_environment_list_is_get_environments(self, seeded: Seeded) -> None:
        acc = seeded.account.account_id
        result = cli(seeded, "environment", "list", "--account", acc, "--json")
        expect_ok(result)
        status, from_api = api_get(seeded.settings.data_dir, "/environments", seeded.account.auth)
        assert status == 200
        assert result.json() == from_api
        assert [e["id"] for e in from_api["environments"]] == [seeded.env_id]

    def test_events_starting_after_fails_as_the_api_does(self, seeded: Seeded) -> None:
        acc = seeded.account.account_id
        data_dir, auth = seeded.settings.data_dir, seeded.account.auth
        for cursor in ["nope", "evt_" + "0" * 25, "key_" + "0" * 26]:
            status, body = api_get(data_dir, f"/events?startingAfter={cursor}", auth)
            assert (status, body["error"]["code"]) == (400, "validation_error")
            result = cli(seeded, "events", "--account", acc, "--starting-after", cursor, "--json")
            assert result.code == 1, scrub(result.err)
            assert result.out == ""
            error = json.loads(result.err)["error"]
            assert error["code"] == "validation_error"
        # A well-formed id that is no event of the account: a page, as the API gives.
        unknown = "evt_" + "Z" * 26
        status, from_api = api_get(data_dir, f"/events?startingAfter={unknown}", auth)
        assert status == 200
        result = cli(seeded, "events", "--account", acc, "--starting-after", unknown, "--json")
        expect_ok(result)
        assert result.json() == from_api


class TestErrors:
    def test_json_errors_are_one_json_object_on_stderr(self, seeded: Seeded) -> None:
        result = cli(seeded, "key", "revoke", "key_" + "0" * 26, "--json")
        assert result.code == 1
        assert result.out == ""
        lines = result.err_lines
        assert len(lines) == 1, scrub(result.err)
        body = json.loads(lines[0])
        assert list(body) == ["error"]
        assert sorted(body["error"]) == ["code", "fix", "message"]
        assert body["error"]["code"] == "not_found"
        assert "keyhouse key list" in body["error"]["fix"]

    def test_usage_errors_with_json_are_json_too(self, seeded: Seeded) -> None:
        result = cli(seeded, "key", "create", "--name", "x", "--json")  # no --account, --type
        assert result.code == 2
        assert result.out == ""
        error = json.loads(result.err)["error"]
        assert error["code"] == "usage_error"
        assert "--account" in error["message"]
        assert error["fix"] == "see `keyhouse key create --help`"

    def test_every_json_error_keeps_its_fix(self, seeded: Seeded, tmp_path: Any) -> None:
        """Review r15: a bad --attribute and 'keys:foo' in `scopes set` failed with no
        fix (the CLI's own failure had none; the API's fix named a route and was
        dropped). A fix that names a route the CLI has a command for says the command."""
        acc = seeded.account.account_id
        catalog = tmp_path / "catalog.json"
        catalog.write_text('{"scopes": [{"name": "keys:foo", "description": "x"}]}')
        cases = [
            (["scopes", "set", str(catalog)], "`keyhouse scopes list`"),
            (
                [
                    *("key", "create", "--account", acc, "--name", "x", "--type", "secret"),
                    *("--attribute", "senderDomain"),
                ],
                "--attribute senderDomain=acme.com",
            ),
            (["account", "limits", acc, "--max-keys", "many"], "--max-keys unlimited"),
        ]
        for args, hint in cases:
            result = cli(seeded, *args, "--json")
            assert result.code == 1, args
            error = json.loads(result.err)["error"]
            assert error["code"] == "validation_error", args
            assert hint in error.get("fix", ""), (args, error)
            assert not HTTP_HINT.search(error["fix"]), error

    def test_fixes_name_cli_commands_not_http_routes(self, seeded: Seeded) -> None:
        data_dir = seeded.settings.data_dir
        acc = seeded.account.account_id
        unknown_key = "key_" + "0" * 26
        revoked = seeded.keys["scoped"].row.id

        def with_limit(runtime: Runtime) -> Awaitable[None]:
            return set_limits(runtime, acc, maxKeys=1)

        async def revoke_later(runtime: Runtime) -> None:
            # Leaves the account's first key its last account-wide secret key.
            async with runtime.db.session(write=True) as session:
                later = seeded.keys["later"].row.id
                await KeyService(session, runtime).revoke(None, later, actor=CLI)

        with_runtime(seeded.settings, revoke_later)

        cases: list[tuple[list[str], str, str]] = [
            (["key", "revoke", seeded.account.key_id], "last_secret_key", "--force"),
            (["key", "revoke", unknown_key], "not_found", "keyhouse key list"),
            (["key", "roll", unknown_key], "not_found", "keyhouse key list"),
            (["key", "rename", unknown_key, "x"], "not_found", "keyhouse key list"),
            (["key", "roll", revoked], "conflict", "keyhouse key create"),
            (["key", "list", "--account", "acc_" + "0" * 26], "not_found", "account list"),
            (
                [
                    "key",
                    "create",
                    "--account",
                    acc,
                    "--name",
                    "x",
                    "--type",
                    "secret",
                    "--environment",
                    "env_" + "0" * 26,
                ],
                "not_found",
                "keyhouse environment list",
            ),
            (
                ["environment", "create", "--account", acc, "--name", "staging"],
                "conflict",
                "keyhouse environment list",
            ),
            (
                ["key", "create", "--account", acc, "--name", "x", "--type", "secret"],
                "key_limit_reached",
                "keyhouse account limits",
            ),
        ]
        # A key rolled already: roll the key it was rolled into.
        soon = seeded.keys["soon"].row.id
        rolled = keyhouse(data_dir, "key", "roll", soon, "--json")
        expect_ok(rolled)
        new_id = rolled.json()["id"]
        cases.insert(0, (["key", "roll", soon], "conflict", f"`keyhouse key roll {new_id}`"))
        for args, code, hint in cases:
            if code == "key_limit_reached":
                with_runtime(seeded.settings, with_limit)
            result = keyhouse(data_dir, *args)
            assert result.code == 1, f"keyhouse {' '.join(args)}: exit {result.code}"
            line = expect_one_line_failure(result)
            assert line.startswith(f"keyhouse: {code}: "), line
            assert hint in line, line
            assert not HTTP_HINT.search(line), line


class TestMeta:
    def test_version(self, tmp_path: Any) -> None:
        result = keyhouse(tmp_path / "none", "--version")
        expect_ok(result)
        assert result.out == f"keyhouse {__version__}\n"

    @pytest.mark.parametrize("command", [[], ["key", "revoke"], ["key", "list"], ["status"]])
    def test_help_shows_no_stray_types(self, tmp_path: Any, command: list[str]) -> None:
        result = keyhouse(tmp_path / "none", *command, "--help", COLUMNS="80")
        expect_ok(result)
        assert "<bool>" not in result.out
        assert "Usage: keyhouse" in result.out
