"""The ``keyhouse`` command, run for real as a subprocess (README, "CLI").

No full key may reach the test output: command output is kept out of
``assert`` operands (``CliResult`` hides it from its repr), failure messages
are scrubbed, and keys are compared with ``expect_same_key``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from keyhouse.app import create_app
from keyhouse.config import Settings
from tests.factories import bearer, expect_same_key

# What a keyhouse on KEYHOUSE_DATABASE_URL needs besides: nothing is generated for it.
GIVEN_SECRETS = {
    "KEYHOUSE_ENCRYPTION_KEYS": "k1:" + base64.b64encode(bytes(range(32))).decode(),
    "KEYHOUSE_ADMIN_TOKENS": "kh_admin_cli-tests-0123456789abcdef",
}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_KEYLIKE = re.compile(r"(sk_|pk_)[0-9A-Za-z]{8,}")


def scrub(text: str) -> str:
    """Text fit for a failure message: anything key-like is masked."""
    return _KEYLIKE.sub(lambda m: f"{m.group(1)}…{m.group(0)[-4:]}", text)


def masked(obj: Any) -> Any:
    """A JSON value with every ``key`` member masked, for failure messages."""
    if isinstance(obj, dict):
        return {k: (scrub(str(v)) if k == "key" else masked(v)) for k, v in sorted(obj.items())}
    if isinstance(obj, list):
        return [masked(v) for v in obj]
    return obj


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str = field(repr=False)  # may hold keys: never in a failure message
    err: str = field(repr=False)

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    def json(self) -> Any:
        lines = len(self.out.splitlines())
        assert lines == 1, f"--json printed {lines} lines; stderr: {scrub(self.err)}"
        return json.loads(self.out)


def keyhouse(data_dir: Path, *args: str, **env: str) -> CliResult:
    """``keyhouse ARGS`` on the keyhouse of ``data_dir`` (KEYHOUSE_DATA_DIR), run beside it."""
    return keyhouse_in(data_dir.parent, *args, KEYHOUSE_DATA_DIR=str(data_dir), **env)


def keyhouse_in(cwd: Path, *args: str, **env: str) -> CliResult:
    """``keyhouse ARGS`` run in ``cwd`` with ``env`` (a value of "" unsets the variable)."""
    environ = dict(os.environ)
    environ["COLUMNS"] = "250"  # Rich tables: no wrapped cells
    environ.update(env)
    environ = {name: value for name, value in environ.items() if value != ""}
    proc = subprocess.run(
        [sys.executable, "-m", "keyhouse", *args],
        env=environ,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def expect_ok(result: CliResult) -> None:
    code = result.code
    assert code == 0, f"exit {code}; stderr: {scrub(result.err)}"


def expect_one_line_failure(result: CliResult) -> str:
    """Exit 1, nothing on stdout, exactly one line on stderr and no traceback."""
    code = result.code
    assert code == 1, f"exit {code}; stderr: {scrub(result.err)}"
    stdout_empty = result.out == ""
    assert stdout_empty, "a failing command printed on stdout"
    has_traceback = "Traceback" in result.err
    assert not has_traceback, scrub(result.err)
    lines = result.err_lines
    count = len(lines)
    assert count == 1, scrub(result.err)
    return scrub(lines[0])


def api_get_keys(data_dir: Path, key: str) -> Any:
    """GET /keys on an app built on the same data directory."""

    async def go() -> Any:
        app = create_app(Settings(data_dir=data_dir))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                response = await c.get("/keys", headers=bearer(key))
        status = response.status_code
        assert status == 200, scrub(response.text)
        return response.json()

    return asyncio.run(go())


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def test_account_environment_key_lifecycle(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    # a fresh data directory is made by init, not by any command that happens to run
    expect_ok(keyhouse(data_dir, "init"))

    # account create
    result = keyhouse(data_dir, "account", "create", "--name", "Acme", "--json")
    expect_ok(result)
    account = result.json()
    fields = sorted(account) if isinstance(account, dict) else None
    assert fields == ["accountId", "key", "keyId"]
    account_id, account_key_id, account_key = account["accountId"], account["keyId"], account["key"]
    assert account_id.startswith("acc_")
    assert account_key_id.startswith("key_")
    key_shape_ok = account_key.startswith("sk_") and len(account_key) == 52
    assert key_shape_ok, f"unexpected key shape: {scrub(account_key)} ({len(account_key)} chars)"

    # the data directory and its files are private
    assert mode(data_dir) == "0o700"
    assert mode(data_dir / "keyhouse.db") == "0o600"
    assert mode(data_dir / "encryption_keys") == "0o600"
    for extra in ("keyhouse.db-wal", "keyhouse.db-shm"):
        if (data_dir / extra).exists():
            assert mode(data_dir / extra) == "0o600", extra

    # environment create
    result = keyhouse(
        data_dir, "environment", "create", "--account", account_id, "--name", "staging", "--json"
    )
    expect_ok(result)
    env = result.json()
    env_fields = sorted(env)
    assert env_fields == ["accountId", "createdAt", "id", "name"]
    assert env["id"].startswith("env_")
    assert env["accountId"] == account_id
    assert env["name"] == "staging"
    assert TIMESTAMP.match(env["createdAt"]), env["createdAt"]

    # key create: the key object exactly as the API returns it
    result = keyhouse(
        data_dir,
        "key",
        "create",
        "--account",
        account_id,
        "--name",
        "web widget",
        "--type",
        "public",
        "--environment",
        env["id"],
        "--json",
    )
    expect_ok(result)
    created = result.json()
    key_fields = sorted(created)
    assert key_fields == sorted(
        ["id", "key", "keyType", "environmentId", "accountId", "name", "revoked", "createdAt"]
    )
    no_nulls = all(v is not None for v in created.values())
    assert no_nulls, masked(created)
    assert created["id"].startswith("key_")
    public_key = created["key"]
    public_shape_ok = public_key.startswith("pk_") and len(public_key) == 52
    assert public_shape_ok, scrub(public_key)
    assert created["keyType"] == "public"
    assert created["environmentId"] == env["id"]
    assert created["accountId"] == account_id
    assert created["name"] == "web widget"
    assert created["revoked"] is False
    assert TIMESTAMP.match(created["createdAt"]), created["createdAt"]

    # key list --json: newest first, and exactly what GET /keys returns. The
    # API call goes first: it uses the account's key, and its lastUsedAt is
    # written behind when that app shuts down, so the CLI then reads the same.
    from_api = api_get_keys(data_dir, account_key)
    result = keyhouse(data_dir, "key", "list", "--account", account_id, "--json")
    expect_ok(result)
    listed = result.json()
    list_fields = list(listed)
    assert list_fields == ["keys"]
    ids = [k["id"] for k in listed["keys"]]
    assert ids == [created["id"], account_key_id]
    expect_same_key(listed["keys"][0]["key"], public_key)
    expect_same_key(listed["keys"][1]["key"], account_key)
    same_as_created = listed["keys"][0] == created
    assert same_as_created, f"{masked(listed['keys'][0])} != {masked(created)}"
    same_as_api = listed == from_api
    assert same_as_api, f"CLI {masked(listed)} != API {masked(from_api)}"

    # key list for people: a table with masked keys
    result = keyhouse(data_dir, "key", "list", "--account", account_id)
    expect_ok(result)
    leaked = account_key in result.out or public_key in result.out
    assert not leaked, "key list (table) printed a full key"
    leaked_body = account_key[3:] in result.out or public_key[3:] in result.out
    assert not leaked_body, "key list (table) printed a key's body"
    shows_ids = created["id"] in result.out and account_key_id in result.out
    assert shows_ids, "the table does not show the key ids"
    shows_masks = f"sk_…{account_key[-4:]}" in result.out and f"pk_…{public_key[-4:]}" in result.out
    assert shows_masks, "the table does not show masked keys (sk_…abcd)"

    # key revoke, twice: idempotent
    for _ in range(2):
        result = keyhouse(data_dir, "key", "revoke", created["id"], "--json")
        expect_ok(result)
        revoked = result.json()
        assert revoked["id"] == created["id"]
        assert revoked["revoked"] is True
        expect_same_key(revoked["key"], public_key)

    # the account's last account-wide secret key: refused, then forced
    result = keyhouse(data_dir, "key", "revoke", account_key_id, "--json")
    line = expect_one_line_failure(result)
    assert "last_secret_key" in line
    result = keyhouse(data_dir, "key", "revoke", account_key_id, "--force", "--json")
    expect_ok(result)
    forced = result.json()
    assert forced["id"] == account_key_id
    assert forced["revoked"] is True


def test_bad_settings_are_one_line(tmp_path: Path) -> None:
    # Two bad settings in one run: still one line, naming both variables.
    result = keyhouse(
        tmp_path / "data",
        "account",
        "create",
        "--name",
        "Acme",
        "--json",
        KEYHOUSE_KEY_PREFIX_SECRET="bad prefix!",
        KEYHOUSE_DATABASE_URL="mysql://x",
    )
    line = expect_one_line_failure(result)
    assert "KEYHOUSE_KEY_PREFIX_SECRET" in line
    assert "KEYHOUSE_DATABASE_URL" in line
    assert not (tmp_path / "data").exists(), "a bad setting still created the data directory"


def test_unusable_sqlite_path_is_one_line(tmp_path: Path) -> None:
    # The database's parent directory cannot be created: a file is in the way
    # (works as root too, unlike a path under /).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    url = f"sqlite+aiosqlite:///{blocker}/sub/x.db"
    # migrate creates the database (account create would refuse: there is none).
    result = keyhouse(tmp_path / "data", "migrate", KEYHOUSE_DATABASE_URL=url, **GIVEN_SECRETS)
    line = expect_one_line_failure(result)
    assert line.startswith("keyhouse: "), line
    assert "cannot use the database" in line


def test_unreachable_postgres_is_one_line_without_password(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://postgres:hunter2@127.0.0.1:1/x"
    result = keyhouse(tmp_path / "data", "migrate", KEYHOUSE_DATABASE_URL=url, **GIVEN_SECRETS)
    line = expect_one_line_failure(result)
    assert "127.0.0.1" in line
    assert "hunter2" not in line


def test_migrate_then_unknown_account(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = keyhouse(data_dir, "migrate")
    expect_ok(result)
    assert (data_dir / "keyhouse.db").exists()

    result = keyhouse(
        data_dir,
        "key",
        "create",
        "--account",
        "acc_nosuchaccount",
        "--name",
        "x",
        "--type",
        "secret",
        "--json",
    )
    line = expect_one_line_failure(result)
    assert "not_found" in line
