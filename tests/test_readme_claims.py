"""Claims of the README, shown true (issue 13, item 7).

* "every response of a key with a rate limit carries RateLimit-Limit,
  RateLimit-Remaining and RateLimit-Reset": every response to a call that
  counts against the plan, and only those, carries all three (``GET /account``
  is never counted; a request refused before the key is known has no key).
* "a typo is rejected without a database lookup": no SQL statement runs for
  a mistyped key, whether sent to ``POST /verify`` or as a Bearer token, and
  every single-character typo of a key is caught by its checksum.
* "``--json`` output is one JSON object on stdout and nothing else", with the
  members the README's CLI table lists: see ``tests/cli/test_json_table.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, event

from keyhouse.keys.format import ALPHABET, KeyFormat, Kind
from keyhouse.runtime import Runtime
from tests.factories import bearer, create_account, create_key, expect_error
from tests.limits.helpers import account_on_plan

RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


async def _used(client: httpx.AsyncClient, auth: dict[str, str]) -> int:
    account = await client.get("/account", headers=auth)
    assert account.status_code == 200, account.text
    requests: int = account.json()["usage"]["requests"]
    return requests


class TestRateLimitHeaders:
    async def test_on_every_counted_response_and_no_other(
        self, app: FastAPI, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, ratePerSecond=1000, burst=1000)
        auth = acc.auth
        other = await create_key(runtime, acc.account_id)
        rolled = await create_key(runtime, acc.account_id)
        missing = "key_01M8N5SHA2TTRENV8FNJF69RB0"
        calls: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", "/keys", None),
            ("GET", "/keys?revoked=false", None),
            ("POST", "/keys", {"name": "k", "keyType": "public"}),
            ("POST", "/keys", {"name": "k", "keyType": "nonsense"}),  # 400 body
            ("GET", f"/keys/{other.row.id}", None),
            ("GET", f"/keys/{missing}", None),  # 404
            ("PATCH", f"/keys/{other.row.id}", {"name": "renamed"}),
            ("POST", f"/keys/{rolled.row.id}/roll", None),
            ("POST", f"/keys/{other.row.id}/revoke", None),
            ("GET", "/environments", None),
            ("POST", "/environments", {"name": "staging"}),
            ("GET", "/events", None),
            ("GET", "/events?limit=2", None),
            ("GET", "/account", None),
            ("GET", "/keys?keytype=secret", None),  # 400 before anything: no key yet
        ]
        operations = {
            (method.upper(), path)
            for path, item in app.openapi()["paths"].items()
            for method, op in item.items()
            if op.get("security") == [{"accountKey": []}]
        }
        called = {
            (
                method,
                path.split("?")[0]
                .replace(other.row.id, "{key_id}")
                .replace(rolled.row.id, "{key_id}")
                .replace(missing, "{key_id}"),
            )
            for method, path, _ in calls
        }
        assert operations - called == set(), "account operations this test does not call"
        with_headers = 0
        for method, path, body in calls:
            before = await _used(client, auth)
            resp = await client.request(method, path, headers=auth, json=body)
            counted = await _used(client, auth) - before
            present = [name for name in RATE_HEADERS if name in resp.headers]
            assert counted in {0, 1}, (method, path, counted)
            expected = list(RATE_HEADERS) if counted else []
            assert present == expected, (method, path, resp.status_code, counted, present)
            with_headers += bool(counted)
        assert with_headers >= 10

    async def test_a_refusal_for_the_rate_carries_them(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, ratePerSecond=1, burst=1)
        assert (await client.get("/keys", headers=acc.auth)).status_code == 200
        refused = await client.get("/keys", headers=acc.auth)
        expect_error(refused, 429, "rate_limited")
        assert all(name in refused.headers for name in (*RATE_HEADERS, "retry-after"))

    async def test_verify_answers_with_ratelimit(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, ratePerSecond=10, burst=10)
        admin = bearer(runtime.admin_tokens.first)
        verdict = (await client.post("/verify", headers=admin, json={"key": acc.key})).json()
        assert verdict["code"] == "valid"
        assert set(verdict["ratelimit"]) == {"limit", "remaining", "reset"}


@contextmanager
def statements(runtime: Runtime) -> Iterator[list[str]]:
    """Every SQL statement any of the runtime's engines runs meanwhile."""
    seen: list[str] = []
    db = runtime.db
    engines: list[Engine] = [db.engine.sync_engine]
    if db.write_engine is not db.engine:  # on PostgreSQL they are one
        engines.append(db.write_engine.sync_engine)
    if db.inline_engine is not None:
        engines.append(db.inline_engine)

    def record(*args: Any) -> None:
        seen.append(str(args[2]))  # (conn, cursor, statement, ...)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def _typo(key: str, position: int) -> str:
    """``key`` with one character of its body replaced by the next in the alphabet."""
    char = key[position]
    swapped = ALPHABET[(ALPHABET.index(char) + 1) % len(ALPHABET)]
    return key[:position] + swapped + key[position + 1 :]


class TestChecksum:
    async def test_a_typo_is_rejected_without_a_database_statement(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        admin = bearer(runtime.admin_tokens.first)
        typos = [_typo(acc.key, position) for position in (3, 20, len(acc.key) - 1)]
        with statements(runtime) as seen:
            for typo in typos:
                verdict = await client.post("/verify", headers=admin, json={"key": typo})
                assert verdict.json() == {"valid": False, "code": "malformed"}
                expect_error(
                    await client.get("/keys", headers=bearer(typo)), 401, "malformed_api_key"
                )
        assert seen == []
        # The control: the right key reads the database (the cache is cold for it).
        runtime.cache.clear()
        with statements(runtime) as seen:
            assert (await client.get("/keys", headers=acc.auth)).status_code == 200
        assert seen != []

    @pytest.mark.sqlite_only
    def test_every_single_character_typo_is_caught(self) -> None:
        # CRC-32 detects every burst error of up to 32 bits: one changed
        # character of the ASCII body is at most 8.
        key_format = KeyFormat("sk_", "pk_")
        for _ in range(3):
            key = key_format.generate("secret")
            for position in range(3, len(key)):
                for char in ALPHABET:
                    if char == key[position]:
                        continue
                    typo = key[:position] + char + key[position + 1 :]
                    assert key_format.parse(typo).kind is Kind.MALFORMED, (position, char)
