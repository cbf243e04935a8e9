"""The lifecycle commands of ``keyhouse``, run for real as subprocesses (README, "CLI").

Each run costs about a second, so accounts are made in-process with the
factories (on the same data directory) and only the commands under test
run as subprocesses: eight runs in all. No full key or admin token reaches
the test output (see ``tests/test_cli.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from keyhouse.app import create_app
from keyhouse.audit.service import CLI
from keyhouse.config import Settings
from keyhouse.keys.service import KeyService
from keyhouse.runtime import Runtime
from tests.factories import AccountWithKey, bearer, create_account, create_key, expect_same_key

# The CLI runs as a subprocess on the test's data directory: SQLite. The services
# it calls are the API's, which run on both engines.
pytestmark = pytest.mark.sqlite_only

from tests.test_cli import (  # noqa: E402
    TIMESTAMP,
    expect_ok,
    expect_one_line_failure,
    keyhouse,
    masked,
    scrub,
)

T = TypeVar("T")


def with_runtime(settings: Settings, work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run ``work`` on a runtime over the data directory, as the app would."""

    async def go() -> T:
        runtime = Runtime.build(settings)
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    return asyncio.run(go())


def seed_account(settings: Settings, name: str = "Acme") -> AccountWithKey:
    return with_runtime(settings, lambda runtime: create_account(runtime, name))


def api_get(data_dir: Path, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    """GET ``path`` on an app built on the same data directory."""

    async def go() -> tuple[int, Any]:
        app = create_app(Settings(data_dir=data_dir))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                response = await c.get(path, headers=headers)
        return response.status_code, response.json()

    return asyncio.run(go())


def api_ok(data_dir: Path, path: str, headers: dict[str, str]) -> Any:
    status, body = api_get(data_dir, path, headers)
    assert status == 200, scrub(json.dumps(body))
    return body


def key_fields_but_key(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "key"}


def test_key_rename_roll_and_events(settings: Settings) -> None:
    data_dir = settings.data_dir
    acc = seed_account(settings)
    expires = datetime.now(UTC) + timedelta(days=30)

    def make_key(runtime: Runtime) -> Awaitable[Any]:
        return create_key(runtime, acc.account_id, name="backend", expires_at=expires)

    target = with_runtime(settings, make_key)

    # key rename ID NAME --json: the key object with the new name
    result = keyhouse(data_dir, "key", "rename", target.row.id, "billing backend", "--json")
    expect_ok(result)
    renamed = result.json()
    assert renamed["id"] == target.row.id
    assert renamed["name"] == "billing backend"
    assert renamed["accountId"] == acc.account_id
    assert renamed["keyType"] == "secret"
    assert renamed["revoked"] is False
    expect_same_key(renamed["key"], target.plaintext)
    shown = api_ok(data_dir, f"/keys/{target.row.id}", acc.auth)
    same = key_fields_but_key(shown) == key_fields_but_key(renamed)
    assert same, f"API {masked(shown)} != CLI {masked(renamed)}"

    # key roll ID --grace SECONDS --json: the new key object
    before = datetime.now(UTC)
    result = keyhouse(data_dir, "key", "roll", target.row.id, "--grace", "3600", "--json")
    after = datetime.now(UTC)
    expect_ok(result)
    new = result.json()
    assert new["id"] != target.row.id
    assert new["id"].startswith("key_")
    assert new["name"] == "billing backend"
    assert new["keyType"] == "secret"
    assert new["accountId"] == acc.account_id
    assert new["revoked"] is False
    assert new["expiresAt"] == renamed["expiresAt"]
    assert TIMESTAMP.match(new["createdAt"]), new["createdAt"]
    new_key = new["key"]
    fresh = isinstance(new_key, str) and new_key.startswith("sk_") and new_key != target.plaintext
    assert fresh, f"not a new secret key: {scrub(str(new_key))}"
    from_api = api_ok(data_dir, f"/keys/{new['id']}", acc.auth)
    expect_same_key(from_api["key"], new_key)

    # The old key ends after the grace period; both keys work meanwhile.
    old = api_ok(data_dir, f"/keys/{target.row.id}", acc.auth)
    old_end = datetime.fromisoformat(old["expiresAt"])
    low = before + timedelta(seconds=3600) - timedelta(milliseconds=1)
    high = after + timedelta(seconds=3600)
    assert low <= old_end <= high, old["expiresAt"]
    api_ok(data_dir, "/keys", bearer(target.plaintext))
    api_ok(data_dir, "/keys", bearer(new_key))

    # events --account A --json: the CLI's changes, actor cli
    result = keyhouse(data_dir, "events", "--account", acc.account_id, "--json")
    expect_ok(result)
    body = result.json()
    assert sorted(body) == ["events", "hasMore"]
    assert body["hasMore"] is False
    events = body["events"]
    assert [e["type"] for e in events] == [
        "key.rolled",
        "key.created",
        "key.renamed",
        "key.created",
        "key.created",
        "account.created",
    ]
    for event in events:
        assert event["actor"] == {"type": "cli"}, event
        assert "ip" not in event, event
        assert "userAgent" not in event, event
        assert TIMESTAMP.match(event["createdAt"]), event
    rolled, rolled_created, renamed_ev = events[0], events[1], events[2]
    assert rolled["keyId"] == target.row.id
    assert rolled["data"]["rolledTo"] == new["id"]
    assert rolled_created["keyId"] == new["id"]
    assert renamed_ev["keyId"] == target.row.id
    clean = not any(k in result.out for k in (acc.key, target.plaintext, new_key))
    assert clean, "events --json printed a key string"
    # The same log as GET /events.
    same_as_api = api_ok(data_dir, "/events", acc.auth) == body
    assert same_as_api, "CLI events differ from GET /events"

    # A revoked key cannot be rolled: one line, exit 1, and nothing recorded.
    async def revoke(runtime: Runtime) -> None:
        async with runtime.db.session(write=True) as session:
            await KeyService(session, runtime).revoke(None, new["id"], actor=CLI)

    with_runtime(settings, revoke)
    events_before = api_ok(data_dir, "/events", acc.auth)["events"]
    result = keyhouse(data_dir, "key", "roll", new["id"], "--json")
    line = expect_one_line_failure(result)
    assert "conflict" in line, line
    events_after = api_ok(data_dir, "/events", acc.auth)["events"]
    assert events_after == events_before
    listed = api_ok(data_dir, "/keys", acc.auth)["keys"]
    assert [k["id"] for k in listed] == [new["id"], target.row.id, acc.key_id]


def test_account_list_and_limits(settings: Settings) -> None:
    data_dir = settings.data_dir
    first = seed_account(settings, "Acme")
    second = seed_account(settings, "Globex")

    # account list --json: {"accounts": [...]}, newest first
    result = keyhouse(data_dir, "account", "list", "--json")
    expect_ok(result)
    listed = result.json()
    assert list(listed) == ["accounts"]
    accounts = listed["accounts"]
    assert [a["id"] for a in accounts] == [second.account_id, first.account_id]
    assert [a["name"] for a in accounts] == ["Globex", "Acme"]
    for account in accounts:
        assert sorted(account) == [
            "createdAt",
            "id",
            "limits",
            "name",
            "refuseSecretKeysFromBrowsers",
        ]
        assert sorted(account["limits"]) == ["burst", "maxKeys", "monthlyRequests", "ratePerSecond"]
        assert TIMESTAMP.match(account["createdAt"]), account
    clean = not any(k in result.out for k in (first.key, second.key))
    assert clean, "account list printed a key string"
    original = accounts[1]

    # account limits ACC --max-keys 5 --monthly-requests unlimited --json
    result = keyhouse(
        data_dir,
        "account",
        "limits",
        first.account_id,
        "--max-keys",
        "5",
        "--monthly-requests",
        "unlimited",
        "--json",
    )
    expect_ok(result)
    updated = result.json()
    assert updated["id"] == first.account_id
    assert updated["name"] == "Acme"
    assert updated["limits"] == {
        **original["limits"],
        "maxKeys": 5,
        "monthlyRequests": None,
    }
    assert updated["createdAt"] == original["createdAt"]
    # The API sees the same account, and the change is in the audit log.
    seen_by_api = api_ok(data_dir, "/account", first.auth)
    seen_by_api.pop("usage")  # the account's own view adds this period's usage
    assert seen_by_api == updated
    events = api_ok(data_dir, "/events", first.auth)["events"]
    assert events[0]["type"] == "account.updated"
    assert events[0]["actor"] == {"type": "cli"}
    # The other account is untouched.
    other = api_ok(data_dir, "/account", second.auth)
    other.pop("usage")
    assert other == accounts[0]


def test_admin_token_is_stable(settings: Settings) -> None:
    data_dir = settings.data_dir
    # The token is made with the keyhouse (init, or serve), never by admin-token.
    expect_ok(keyhouse(data_dir, "init"))
    tokens: list[str] = []
    for _ in range(2):
        result = keyhouse(data_dir, "admin-token", "--json")
        expect_ok(result)
        body = result.json()
        members = sorted(body) if isinstance(body, dict) else None
        assert members == ["adminToken"]
        token = body["adminToken"]
        usable = isinstance(token, str) and len(token) >= 24 and token.isprintable()
        assert usable, "adminToken is not a usable token"
        tokens.append(token)
    same = tokens[0] == tokens[1]
    assert same, "admin-token printed a different token on its second run"
    # It is the token the server takes.
    status, _ = api_get(data_dir, "/admin/accounts", bearer(tokens[0]))
    assert status == 200
    status, _ = api_get(data_dir, "/admin/accounts", bearer(tokens[0] + "x"))
    assert status == 401
