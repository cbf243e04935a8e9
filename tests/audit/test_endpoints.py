"""``GET /events``: the audit log, through the real app on a real SQLite file.

No full key or admin token reaches the test output: event bodies never hold
one (that is what is tested), and everything else that does stays out of
``assert`` operands.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from keyhouse.audit.repository import EventRepository
from keyhouse.keys.repository import KeyRepository
from keyhouse.models import ApiKey, Event
from keyhouse.runtime import Runtime
from tests.factories import (
    AccountWithKey,
    bearer,
    create_account,
    create_environment,
    create_key,
    set_expiry,
)
from tests.factories import expect_error as check_error

EVENT_ID = re.compile(r"^evt_[0-9A-HJKMNP-TV-Z]{26}$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_KEYLIKE = re.compile(r"(sk_|pk_)[0-9A-Za-z]{8,}")
USER_AGENT = "keyhouse-audit-tests/1.0 (+pytest)"
EVENT_MEMBERS = {
    "id",
    "type",
    "keyId",
    "environmentId",
    "actor",
    "ip",
    "userAgent",
    "data",
    "createdAt",
}


def scrub(text: object) -> str:
    return _KEYLIKE.sub(lambda m: f"{m.group(1)}…{m.group(0)[-4:]}", str(text))


def api(acc: AccountWithKey) -> dict[str, str]:
    """Headers of an API call made by the account's first key, with a User-Agent."""
    return {**acc.auth, "User-Agent": USER_AGENT}


def admin(runtime: Runtime) -> dict[str, str]:
    return {**bearer(runtime.admin_tokens.first), "User-Agent": USER_AGENT}


def expect_status(resp: httpx.Response, status: int) -> Any:
    got = resp.status_code
    assert got == status, f"status {got}: {scrub(resp.text)}"
    return resp.json()


async def page(client: httpx.AsyncClient, auth: dict[str, str], query: str = "") -> dict[str, Any]:
    body: dict[str, Any] = expect_status(await client.get(f"/events{query}", headers=auth), 200)
    assert sorted(body) == ["events", "hasMore"]
    return body


async def all_events(client: httpx.AsyncClient, auth: dict[str, str]) -> list[dict[str, Any]]:
    body = await page(client, auth, "?limit=100")
    assert body["hasMore"] is False
    events: list[dict[str, Any]] = body["events"]
    return events


def check_shape(event: dict[str, Any]) -> None:
    extra = set(event) - EVENT_MEMBERS
    assert not extra, event
    assert None not in event.values(), event
    assert EVENT_ID.match(event["id"]), event
    assert TIMESTAMP.match(event["createdAt"]), event
    assert event["actor"]["type"] in {"key", "admin", "cli"}, event
    assert set(event["actor"]) <= {"type", "id"}, event


def expect_api_actor(event: dict[str, Any], key_id: str) -> None:
    assert event["actor"] == {"type": "key", "id": key_id}, event
    assert event["ip"] == "127.0.0.1", event
    assert event["userAgent"] == USER_AGENT, event


def expect_cli_actor(event: dict[str, Any]) -> None:
    assert event["actor"] == {"type": "cli"}, event
    assert "ip" not in event, event
    assert "userAgent" not in event, event


def no_key_string_in(text: str, keys: list[str]) -> bool:
    """No key occurs in the text, whole or without its prefix."""
    return not any(k in text or k[3:] in text for k in keys)


class TestRecordedChanges:
    async def test_every_change_is_recorded_newest_first(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)  # account.created, key.created (CLI)

        env = expect_status(
            await client.post("/environments", headers=api(acc), json={"name": "staging"}), 201
        )
        made = expect_status(
            await client.post(
                "/keys",
                headers=api(acc),
                json={"name": "backend", "keyType": "secret", "environmentId": env["id"]},
            ),
            201,
        )
        expect_status(
            await client.patch(f"/keys/{made['id']}", headers=api(acc), json={"name": "renamed"}),
            200,
        )
        rolled = expect_status(
            await client.post(
                f"/keys/{made['id']}/roll", headers=api(acc), json={"expiresInSeconds": 60}
            ),
            201,
        )
        expect_status(await client.post(f"/keys/{rolled['id']}/revoke", headers=api(acc)), 200)
        # The old key's grace period ends; its next use finds it expired.
        await set_expiry(runtime, made["id"], datetime.now(UTC) - timedelta(seconds=1))
        expect_error(
            await client.get("/keys", headers={**bearer(made["key"]), "User-Agent": USER_AGENT}),
            401,
            "expired_api_key",
        )

        events = await all_events(client, acc.auth)
        for event in events:
            check_shape(event)
        types = [e["type"] for e in events]
        assert types == [
            "key.expired",
            "key.revoked",
            "key.rolled",
            "key.created",
            "key.renamed",
            "key.created",
            "environment.created",
            "key.created",
            "account.created",
        ]
        ids = [e["id"] for e in events]
        assert ids == sorted(ids, reverse=True)
        assert len(set(ids)) == len(ids)
        (
            expired,
            revoked,
            rolled_ev,
            rolled_created,
            renamed,
            created,
            env_created,
            first_key,
            account_created,
        ) = events

        # Factory (CLI) changes: actor cli, no ip or user agent.
        expect_cli_actor(account_created)
        assert "keyId" not in account_created
        expect_cli_actor(first_key)
        assert first_key["keyId"] == acc.key_id

        # API changes: the calling key, its ip and user agent.
        for event in [env_created, created, renamed, rolled_created, rolled_ev, revoked]:
            expect_api_actor(event, acc.key_id)
        assert env_created["environmentId"] == env["id"]
        assert "keyId" not in env_created
        assert created["keyId"] == made["id"]
        assert created["environmentId"] == env["id"]
        assert renamed["keyId"] == made["id"]
        assert rolled_ev["keyId"] == made["id"]
        assert rolled_ev["data"]["rolledTo"] == rolled["id"]
        assert rolled_ev["environmentId"] == env["id"]
        assert rolled_created["keyId"] == rolled["id"]
        assert revoked["keyId"] == rolled["id"]
        assert expired["keyId"] == made["id"]
        assert expired["environmentId"] == env["id"]

        # Timestamps follow the ids' order.
        stamps = [e["createdAt"] for e in events]
        assert stamps == sorted(stamps, reverse=True)

    async def test_operator_changes_are_recorded(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        resp = await client.post(
            "/admin/accounts", headers=admin(runtime), json={"name": "Operated"}
        )
        created = expect_status(resp, 201)
        account_id = created["account"]["id"]
        auth = bearer(created["key"]["key"])
        expect_status(
            await client.patch(
                f"/admin/accounts/{account_id}",
                headers=admin(runtime),
                json={"limits": {"maxKeys": 7}},
            ),
            200,
        )
        imported_key = "legacy_" + secrets.token_urlsafe(24)
        imported = expect_status(
            await client.post(
                f"/admin/accounts/{account_id}/keys/import",
                headers=admin(runtime),
                json={"key": imported_key, "name": "old system", "keyType": "secret"},
            ),
            201,
        )

        events = await all_events(client, auth)
        types = [e["type"] for e in events]
        assert types == ["key.imported", "account.updated", "key.created", "account.created"]
        for event in events:
            check_shape(event)
            assert event["actor"] == {"type": "admin"}, event
            assert event["ip"] == "127.0.0.1"
            assert event["userAgent"] == USER_AGENT
        assert events[0]["keyId"] == imported["id"]
        assert events[2]["keyId"] == created["key"]["id"]
        text = json.dumps(events)
        clean = no_key_string_in(text, [imported_key, created["key"]["key"]])
        assert clean, "an event holds a key string"

    async def test_no_event_contains_a_key_string(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "production")
        keys = [acc.key]
        for body in [
            {"name": "a", "keyType": "secret"},
            {"name": "b", "keyType": "public", "environmentId": env.id},
        ]:
            made = expect_status(await client.post("/keys", headers=api(acc), json=body), 201)
            keys.append(made["key"])
            rolled = expect_status(
                await client.post(f"/keys/{made['id']}/roll", headers=api(acc)), 201
            )
            keys.append(rolled["key"])
            expect_status(
                await client.patch(f"/keys/{rolled['id']}", headers=api(acc), json={"name": "c"}),
                200,
            )
            expect_status(await client.post(f"/keys/{rolled['id']}/revoke", headers=api(acc)), 200)
        imported_key = "legacy_" + secrets.token_urlsafe(24)
        expect_status(
            await client.post(
                f"/admin/accounts/{acc.account_id}/keys/import",
                headers=admin(runtime),
                json={"key": imported_key, "name": "old", "keyType": "secret"},
            ),
            201,
        )
        keys.append(imported_key)
        factory_key = await create_key(runtime, acc.account_id)
        keys.append(factory_key.plaintext)

        resp = await client.get("/events?limit=100", headers=acc.auth)
        assert resp.status_code == 200
        count = len(resp.json()["events"])
        assert count >= 12
        clean = no_key_string_in(resp.text, keys)
        assert clean, "GET /events returned a key string"
        # The stored rows hold none either.
        async with runtime.db.session(write=False) as session:
            rows = await EventRepository(session).list(acc.account_id, limit=1000)
            stored = json.dumps(
                [[r.type, r.key_id, r.environment_id, r.actor_id, r.data] for r in rows]
            )
        clean = no_key_string_in(stored, keys)
        assert clean, "a stored event holds a key string"

    async def test_rejected_requests_record_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        victim = await create_key(runtime, acc.account_id)
        expect_status(await client.post(f"/keys/{victim.row.id}/revoke", headers=acc.auth), 200)
        expired = await create_key(runtime, acc.account_id)
        await set_expiry(runtime, expired.row.id, datetime.now(UTC) - timedelta(seconds=1))
        # The expiry is recorded on first use; later uses record nothing.
        expect_error(
            await client.get("/keys", headers=bearer(expired.plaintext)), 401, "expired_api_key"
        )
        before = await all_events(client, acc.auth)
        other_before = await all_events(client, other.auth)

        # The last active account-wide secret key: 409.
        expect_error(
            await client.post(f"/keys/{acc.key_id}/revoke", headers=acc.auth),
            409,
            "last_secret_key",
        )
        # Renames refused: bad name, other member, another account's key.
        for body in [{"name": ""}, {"name": "x", "revoked": True}, {"revoked": True}]:
            expect_error(
                await client.patch(f"/keys/{acc.key_id}", headers=acc.auth, json=body),
                400,
                "validation_error",
            )
        expect_error(
            await client.patch(f"/keys/{other.key_id}", headers=acc.auth, json={"name": "x"}),
            404,
            "not_found",
        )
        # Rolls refused: revoked, expired, bad grace, another account's key.
        for key_id in [victim.row.id, expired.row.id]:
            expect_error(
                await client.post(f"/keys/{key_id}/roll", headers=acc.auth), 409, "conflict"
            )
        for grace in [-1, 604_801, "x"]:
            expect_error(
                await client.post(
                    f"/keys/{acc.key_id}/roll",
                    headers=acc.auth,
                    json={"expiresInSeconds": grace},
                ),
                400,
                "validation_error",
            )
        expect_error(
            await client.post(f"/keys/{other.key_id}/roll", headers=acc.auth), 404, "not_found"
        )
        expect_error(
            await client.post(f"/keys/{other.key_id}/revoke", headers=acc.auth), 404, "not_found"
        )
        # Creates refused.
        expect_error(
            await client.post(
                "/keys",
                headers=acc.auth,
                json={"name": "n", "keyType": "secret", "expiresAt": "2001-01-01T00:00:00Z"},
            ),
            400,
            "validation_error",
        )
        expect_error(
            await client.post("/environments", headers=acc.auth, json={"name": ""}),
            400,
            "validation_error",
        )
        # Uses refused: revoked and (already recorded) expired keys.
        expect_error(
            await client.get("/keys", headers=bearer(victim.plaintext)), 401, "revoked_api_key"
        )
        expect_error(
            await client.get("/keys", headers=bearer(expired.plaintext)), 401, "expired_api_key"
        )

        after = await all_events(client, acc.auth)
        assert [e["id"] for e in after] == [e["id"] for e in before]
        assert after == before
        other_after = await all_events(client, other.auth)
        assert other_after == other_before

    async def test_renaming_to_the_same_name_records_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        target = await create_key(runtime, acc.account_id, name="same")
        before = await all_events(client, acc.auth)
        expect_status(
            await client.patch(f"/keys/{target.row.id}", headers=acc.auth, json={"name": "same"}),
            200,
        )
        assert await all_events(client, acc.auth) == before


class TestSameTransaction:
    """A change and its event commit together or not at all."""

    async def test_event_that_cannot_be_written_undoes_the_change(
        self, client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        acc = await create_account(runtime)
        target = await create_key(runtime, acc.account_id, name="before")
        before = await all_events(client, acc.auth)
        original_add = EventRepository.add

        def broken_add(self: EventRepository, event: Event) -> None:
            event.type = None  # type: ignore[assignment]  # NOT NULL: the insert fails
            original_add(self, event)

        monkeypatch.setattr(EventRepository, "add", broken_add)
        resp = await client.patch(f"/keys/{target.row.id}", headers=acc.auth, json={"name": "x"})
        expect_error(resp, 500, "internal_error")
        resp = await client.post(f"/keys/{target.row.id}/roll", headers=acc.auth)
        expect_error(resp, 500, "internal_error")
        keys_after_roll = (await client.get("/keys", headers=acc.auth)).json()["keys"]
        resp = await client.post(f"/keys/{target.row.id}/revoke", headers=acc.auth)
        expect_error(resp, 500, "internal_error")
        monkeypatch.undo()

        async with runtime.db.session(write=False) as session:
            row = await session.get(ApiKey, target.row.id)
            assert row is not None
            assert row.name == "before"
            assert row.revoked is False
            assert row.expires_at is None
        assert [k["id"] for k in keys_after_roll] == [target.row.id, acc.key_id]
        assert await all_events(client, acc.auth) == before

    async def test_change_that_fails_leaves_no_event(
        self, client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        acc = await create_account(runtime)
        target = await create_key(runtime, acc.account_id, name="before")
        before = await all_events(client, acc.auth)

        async def failing_flush(self: KeyRepository) -> None:
            raise RuntimeError("the change fails after its event was recorded")

        monkeypatch.setattr(KeyRepository, "flush", failing_flush)
        resp = await client.patch(f"/keys/{target.row.id}", headers=acc.auth, json={"name": "x"})
        expect_error(resp, 500, "internal_error")
        resp = await client.post(f"/keys/{target.row.id}/revoke", headers=acc.auth)
        expect_error(resp, 500, "internal_error")
        monkeypatch.undo()

        assert await all_events(client, acc.auth) == before
        async with runtime.db.session(write=False) as session:
            row = await session.get(ApiKey, target.row.id)
            assert row is not None
            assert row.name == "before"
            assert row.revoked is False


class TestListEvents:
    async def make_events(self, runtime: Runtime, acc: AccountWithKey, count: int) -> None:
        for i in range(count):
            await create_key(runtime, acc.account_id, name=f"k{i}")

    async def test_default_page_and_cursor(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        await self.make_events(runtime, acc, 24)  # 26 events in all
        everything = await all_events(client, acc.auth)
        assert len(everything) == 26
        all_ids = [e["id"] for e in everything]
        assert all_ids == sorted(all_ids, reverse=True)

        first = await page(client, acc.auth)
        assert len(first["events"]) == 20
        assert first["hasMore"] is True
        assert first["events"] == everything[:20]
        second = await page(client, acc.auth, f"?startingAfter={first['events'][-1]['id']}")
        assert second["hasMore"] is False
        assert second["events"] == everything[20:]

    @pytest.mark.parametrize("limit", [1, 5, 7, 13, 25, 26, 100])
    async def test_pages_do_not_overlap_and_give_everything(
        self, client: httpx.AsyncClient, runtime: Runtime, limit: int
    ) -> None:
        acc = await create_account(runtime)
        await self.make_events(runtime, acc, 24)
        everything = await all_events(client, acc.auth)
        seen: list[str] = []
        cursor = ""
        pages = 0
        while True:
            body = await page(client, acc.auth, f"?limit={limit}{cursor}")
            pages += 1
            ids = [e["id"] for e in body["events"]]
            assert 0 < len(ids) <= limit
            assert not set(ids) & set(seen), "pages overlap"
            seen.extend(ids)
            if not body["hasMore"]:
                break
            assert len(ids) == limit
            cursor = f"&startingAfter={ids[-1]}"
            assert pages < 100
        assert seen == [e["id"] for e in everything]
        assert pages == -(-26 // limit)

    async def test_exactly_a_page_has_no_more(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        await self.make_events(runtime, acc, 3)  # 5 events
        assert (await page(client, acc.auth, "?limit=5"))["hasMore"] is False
        assert (await page(client, acc.auth, "?limit=4"))["hasMore"] is True
        last = (await page(client, acc.auth))["events"][-1]["id"]
        after_last = await page(client, acc.auth, f"?startingAfter={last}")
        assert after_last == {"events": [], "hasMore": False}

    @pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=-1", "limit=x", "limit="])
    async def test_bad_limit_is_400(
        self, client: httpx.AsyncClient, runtime: Runtime, query: str
    ) -> None:
        acc = await create_account(runtime)
        resp = await client.get(f"/events?{query}", headers=acc.auth)
        expect_error(resp, 400, "validation_error")
        assert "limit" in resp.json()["error"]["message"]

    async def test_limit_100_is_accepted(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        body = await page(client, acc.auth, "?limit=100")
        assert [e["type"] for e in body["events"]] == ["key.created", "account.created"]

    async def test_accounts_do_not_see_each_other(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        await create_key(runtime, other.account_id)
        mine = await all_events(client, acc.auth)
        theirs = await all_events(client, other.auth)
        assert not {e["id"] for e in mine} & {e["id"] for e in theirs}
        assert [e.get("keyId") for e in mine] == [acc.key_id, None]
        # Another account's event id as a cursor reveals nothing of it.
        resp = await page(client, acc.auth, f"?startingAfter={theirs[0]['id']}")
        assert {e["id"] for e in resp["events"]} <= {e["id"] for e in mine}

    async def test_scoped_key_sees_its_environment_only(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        prod = await create_environment(runtime, acc.account_id, "production")
        staging = await create_environment(runtime, acc.account_id, "staging")
        prod_key = await create_key(runtime, acc.account_id, environment_id=prod.id)
        staging_key = await create_key(runtime, acc.account_id, environment_id=staging.id)
        staging_public = await create_key(
            runtime, acc.account_id, environment_id=staging.id, key_type="public"
        )
        expect_status(
            await client.patch(f"/keys/{prod_key.row.id}", headers=acc.auth, json={"name": "p"}),
            200,
        )

        scoped = await all_events(client, bearer(staging_key.plaintext))
        assert all(e.get("environmentId") == staging.id for e in scoped), scoped
        assert [(e["type"], e.get("keyId")) for e in scoped] == [
            ("key.created", staging_public.row.id),
            ("key.created", staging_key.row.id),
            ("environment.created", None),
        ]
        everything = await all_events(client, acc.auth)
        assert len(everything) == 2 + 2 + 3 + 1
        assert {e["id"] for e in scoped} < {e["id"] for e in everything}

    async def test_needs_a_secret_key(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        pub = await create_key(runtime, acc.account_id, key_type="public")
        expect_error(
            await client.get("/events", headers=bearer(pub.plaintext)),
            403,
            "insufficient_permissions",
        )
        expect_error(await client.get("/events"), 401, "missing_api_key")
        expect_error(
            await client.get("/events", headers=bearer(runtime.admin_tokens.first)),
            401,
            "invalid_api_key",
        )


def expect_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The envelope with this status and code (tests/factories.py); its error."""
    __tracebackhide__ = True
    error: dict[str, Any] = check_error(resp, status, code)["error"]
    return error
