"""One keyhouse, never two by accident (issue 13, item 1).

The CLI finds the keyhouse the server uses (KEYHOUSE_DATA_DIR, default
./.keyhouse, or KEYHOUSE_DATABASE_URL) and never makes a new one where it
happens to run: only ``serve``, ``migrate`` and ``init`` create. With an
external database nothing is generated: the encryption keys and admin
tokens are given, or nothing runs. ``status`` says which keyhouse it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyhouse import __version__
from keyhouse.admin_tokens import load_admin_tokens
from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.db.engine import Database
from keyhouse.db.migrate import database_revision, head_revision, migrate
from keyhouse.errors import ConfigurationError
from keyhouse.keys.crypto import load_keyring
from keyhouse.runtime import Runtime
from tests.test_cli import (
    GIVEN_SECRETS,
    expect_ok,
    expect_one_line_failure,
    keyhouse,
    keyhouse_in,
    scrub,
)

# Commands that use a keyhouse and must not make one.
USERS = [
    ["account", "list"],
    ["account", "create", "--name", "Acme"],
    ["key", "list", "--account", "acc_01M8N0GS3BFKBTY5M2GKAKC2W9"],
    ["environment", "list", "--account", "acc_01M8N0GS3BFKBTY5M2GKAKC2W9"],
    ["events", "--account", "acc_01M8N0GS3BFKBTY5M2GKAKC2W9"],
    ["key", "reencrypt"],
    ["admin-token"],
    ["status"],
]
UNREACHABLE_PG = "postgresql+asyncpg://keyhouse:hunter2@127.0.0.1:1/keyhouse"


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TestNoKeyhouseHere:
    @pytest.mark.parametrize("command", USERS, ids=" ".join)
    def test_a_command_refuses_in_one_line_and_creates_nothing(
        self, tmp_path: Path, command: list[str]
    ) -> None:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        result = keyhouse_in(elsewhere, *command)
        line = expect_one_line_failure(result)
        assert line.startswith(f"keyhouse: no keyhouse data directory at {elsewhere}/.keyhouse")
        for words in ("KEYHOUSE_DATA_DIR", "KEYHOUSE_DATABASE_URL", "`keyhouse init`"):
            assert words in line, line
        assert tree(elsewhere) == [], "a refused command left files behind"

    def test_with_json_the_refusal_is_json(self, tmp_path: Path) -> None:
        result = keyhouse_in(tmp_path, "account", "list", "--json")
        assert result.code == 1
        assert result.out == ""
        error = json.loads(result.err)["error"]
        assert error["code"] == "not_initialized"
        assert str(tmp_path / ".keyhouse") in error["message"]
        assert "KEYHOUSE_DATA_DIR" in error["fix"]
        assert tree(tmp_path) == []

    def test_an_empty_data_directory_is_no_keyhouse(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        line = expect_one_line_failure(keyhouse(data_dir, "account", "list"))
        assert f"no keyhouse database in {data_dir}" in line
        assert tree(data_dir) == []

    def test_a_database_without_the_schema_is_refused_and_left_alone(self, tmp_path: Path) -> None:
        # What an app started without `serve` leaves: secrets and an empty database file.
        data_dir = tmp_path / "data"
        load_keyring(None, data_dir)
        load_admin_tokens(None, data_dir)
        (data_dir / "keyhouse.db").touch(mode=0o600)
        line = expect_one_line_failure(keyhouse(data_dir, "account", "create", "--name", "x"))
        assert "holds no keyhouse" in line
        assert "`keyhouse migrate`" in line

        async def revision() -> str | None:
            db = Database(Settings(data_dir=data_dir))
            try:
                return await database_revision(db)
            finally:
                await db.dispose()

        assert asyncio.run(revision()) is None, "the refused command created the tables"

    def test_a_missing_secret_is_not_generated_by_a_command(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        expect_ok(keyhouse(data_dir, "init"))
        (data_dir / "admin_tokens").unlink()
        for command in (["admin-token"], ["account", "list"]):
            line = expect_one_line_failure(keyhouse(data_dir, *command))
            assert f"{data_dir}/admin_tokens is missing" in line, line
            assert "KEYHOUSE_ADMIN_TOKENS" in line
        assert not (data_dir / "admin_tokens").exists()


class TestCreating:
    def test_init_creates_once_and_then_changes_nothing(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        result = keyhouse(data_dir, "init", "--json")
        expect_ok(result)
        head = head_revision()
        assert result.json() == {
            "created": True,
            "dataDir": str(data_dir),
            "database": f"sqlite+aiosqlite:///{data_dir}/keyhouse.db",
            "revision": head,
        }
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        for name in ("keyhouse.db", "encryption_keys", "admin_tokens"):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
        secrets_before = {n: file_hash(data_dir / n) for n in ("encryption_keys", "admin_tokens")}

        result = keyhouse(data_dir, "init")
        expect_ok(result)
        assert result.out == (
            f"keyhouse: sqlite+aiosqlite:///{data_dir}/keyhouse.db already holds a keyhouse "
            f"(revision {head}); nothing created\n"
        )
        secrets_after = {n: file_hash(data_dir / n) for n in ("encryption_keys", "admin_tokens")}
        assert secrets_after == secrets_before

    def test_migrate_says_from_which_revision_to_which(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        head = head_revision()
        url = f"sqlite+aiosqlite:///{data_dir}/keyhouse.db"

        result = keyhouse(data_dir, "migrate", "--json")
        expect_ok(result)
        assert result.json() == {"database": url, "from": None, "to": head}

        # A keyhouse at the first revision (an older keyhouse's): both ends are named.
        data_dir = tmp_path / "older"
        url = f"sqlite+aiosqlite:///{data_dir}/keyhouse.db"
        first = "e386d73ae086"
        asyncio.run(migrate(Settings(data_dir=data_dir), revision=first))
        result = keyhouse(data_dir, "migrate")
        expect_ok(result)
        assert result.out == f"keyhouse: migrated {url} from revision {first} to revision {head}\n"

        result = keyhouse(data_dir, "migrate")
        expect_ok(result)
        assert result.out == f"keyhouse: {url} is at revision {head}, the newest: nothing to do\n"


class TestStatus:
    def test_status_of_the_default_keyhouse(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        expect_ok(keyhouse(data_dir, "init"))
        kid = (data_dir / "encryption_keys").read_text().partition(":")[0]
        result = keyhouse(data_dir, "status", "--json")
        expect_ok(result)
        assert result.json() == {
            "version": __version__,
            "database": {
                "url": f"sqlite+aiosqlite:///{data_dir}/keyhouse.db",
                "revision": head_revision(),
                "newestRevision": head_revision(),
            },
            "dataDir": str(data_dir),
            "encryptionKeys": {"ids": [kid], "from": str(data_dir / "encryption_keys")},
            "adminTokens": {"count": 1, "from": str(data_dir / "admin_tokens")},
            "limits": {"mode": "memory"},
        }
        result = keyhouse(data_dir, "status")
        expect_ok(result)
        # "label" padded to the longest label ("encryption keys"), two spaces, value.
        rows = {line[:15].strip(): line[17:] for line in result.out.splitlines()}
        assert rows["version"] == __version__
        assert rows["data directory"] == str(data_dir)
        assert rows["database"] == f"sqlite+aiosqlite:///{data_dir}/keyhouse.db"
        assert rows["schema"] == f"{head_revision()} (the newest)"
        assert rows["encryption keys"].startswith(f"{kid} (the first encrypts")
        assert rows["admin tokens"] == f"1 (from {data_dir}/admin_tokens)"
        assert rows["limits"].startswith("memory")

    def test_status_on_postgresql_hides_the_password(
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        pg_url: str = request.getfixturevalue("pg_url")
        # Trust authentication: the password is sent to no one, and must be shown to no one.
        with_password = pg_url.replace("postgres@", "postgres:hunter2@", 1)
        result = keyhouse(
            tmp_path / "data",
            "status",
            "--json",
            KEYHOUSE_DATABASE_URL=with_password,
            KEYHOUSE_REDIS_URL="redis://:redispass@127.0.0.1:6379/13",
            **GIVEN_SECRETS,
        )
        expect_ok(result)
        leaked = "hunter2" in result.out or "redispass" in result.out
        assert not leaked, "status printed a password"
        body = result.json()
        assert body["database"]["url"] == with_password.replace("hunter2", "***")
        assert body["database"]["revision"] == head_revision()
        assert body["encryptionKeys"] == {"ids": ["k1"], "from": "KEYHOUSE_ENCRYPTION_KEYS"}
        assert body["adminTokens"] == {"count": 1, "from": "KEYHOUSE_ADMIN_TOKENS"}
        assert body["limits"] == {"mode": "redis", "redisUrl": "redis://:***@127.0.0.1:6379/13"}
        assert tree(tmp_path) == [], "status on PostgreSQL wrote into the data directory"


class TestExternalDatabase:
    """With KEYHOUSE_DATABASE_URL, the secrets are given or nothing starts."""

    @pytest.mark.parametrize(
        "command", [["serve", "--port", "0"], ["migrate"], ["init"], *USERS], ids=" ".join
    )
    def test_nothing_runs_without_the_secrets(self, tmp_path: Path, command: list[str]) -> None:
        result = keyhouse(tmp_path / "data", *command, KEYHOUSE_DATABASE_URL=UNREACHABLE_PG)
        line = expect_one_line_failure(result)
        assert line.startswith(
            "keyhouse: KEYHOUSE_ENCRYPTION_KEYS and KEYHOUSE_ADMIN_TOKENS must be set with "
            "KEYHOUSE_DATABASE_URL"
        ), line
        assert "hunter2" not in line
        assert tree(tmp_path) == [], "a secret or a directory was made"

    @pytest.mark.parametrize("given", ["KEYHOUSE_ENCRYPTION_KEYS", "KEYHOUSE_ADMIN_TOKENS"])
    def test_the_one_missing_is_named(self, tmp_path: Path, given: str) -> None:
        env = {given: GIVEN_SECRETS[given], "KEYHOUSE_DATABASE_URL": UNREACHABLE_PG}
        result = keyhouse(tmp_path / "data", "key", "list", "--account", "acc_x", **env)
        line = expect_one_line_failure(result)
        missing = ({"KEYHOUSE_ENCRYPTION_KEYS", "KEYHOUSE_ADMIN_TOKENS"} - {given}).pop()
        assert line.startswith(f"keyhouse: {missing} must be set"), line
        assert given not in line
        assert tree(tmp_path) == []

    def test_the_server_does_not_start_without_them(self, tmp_path: Path) -> None:
        settings = Settings(data_dir=tmp_path / "data", database_url=UNREACHABLE_PG)
        with pytest.raises(ConfigurationError) as raised:
            Runtime.build(settings)
        assert "KEYHOUSE_ENCRYPTION_KEYS and KEYHOUSE_ADMIN_TOKENS" in str(raised.value)

        async def start() -> None:
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                pass  # pragma: no cover (the start must fail)

        with pytest.raises(ConfigurationError):
            asyncio.run(start())
        assert tree(tmp_path) == []

    def test_explicit_sqlite_url_is_external_too(self, tmp_path: Path) -> None:
        # A database named by URL may sit anywhere: secrets generated into the
        # data dir of whatever directory a command runs in would not be its own.
        url = f"sqlite+aiosqlite:///{tmp_path}/elsewhere.db"
        result = keyhouse(tmp_path / "data", "init", KEYHOUSE_DATABASE_URL=url)
        line = expect_one_line_failure(result)
        assert "must be set with KEYHOUSE_DATABASE_URL" in line
        result = keyhouse(tmp_path / "data", "init", KEYHOUSE_DATABASE_URL=url, **GIVEN_SECRETS)
        expect_ok(result)
        assert tree(tmp_path) == ["elsewhere.db"], scrub(str(tree(tmp_path)))

    def test_the_cli_elsewhere_uses_the_same_postgresql_keyhouse(
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        # The case: from another directory, on PostgreSQL, a key created
        # by the CLI was encrypted under a stray local key. Now the CLI runs with
        # the server's secrets or not at all, and the key is readable by the API.
        pg_url: str = request.getfixturevalue("pg_url")
        env: dict[str, Any] = {"KEYHOUSE_DATABASE_URL": pg_url, **GIVEN_SECRETS}
        here, elsewhere = tmp_path / "server", tmp_path / "elsewhere"
        here.mkdir()
        elsewhere.mkdir()
        created = keyhouse_in(elsewhere, "account", "create", "--name", "Acme", "--json", **env)
        expect_ok(created)
        account = created.json()
        settings = Settings(
            data_dir=here / ".keyhouse",
            database_url=pg_url,
            encryption_keys=GIVEN_SECRETS["KEYHOUSE_ENCRYPTION_KEYS"],
            admin_tokens=GIVEN_SECRETS["KEYHOUSE_ADMIN_TOKENS"],
        )

        async def listed() -> tuple[int, list[str]]:
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                    auth = {"Authorization": f"Bearer {account['key']}"}
                    response = await c.get("/keys", headers=auth)
            return response.status_code, [k["id"] for k in response.json()["keys"]]

        status, ids = asyncio.run(listed())
        assert (status, ids) == (200, [account["keyId"]])
        assert tree(elsewhere) == []
        assert tree(here) == []
