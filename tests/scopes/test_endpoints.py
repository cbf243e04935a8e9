"""``GET``/``PUT /admin/scopes``: the platform's scope catalog, on SQLite and PostgreSQL.

Keys carrying scopes are inserted as rows (``insert_key`` then the columns):
what the catalog checks is the stored scopes and restrictions, whoever
wrote them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from keyhouse.keys.restrictions import BUILTIN_SCOPES
from keyhouse.models import Event
from keyhouse.runtime import Runtime
from keyhouse.scopes.service import catalog_names
from tests.factories import bearer, create_account, expect_error, insert_key
from tests.limits.helpers import until

MESSAGES = {
    "scopes": [
        {"name": "messages:send", "description": "Send messages."},
        {"name": "messages:read", "description": "Read sent messages."},
        {"name": "domains:read", "description": "List sending domains."},
    ],
    "attributes": [{"name": "senderDomain", "description": "The From: domain."}],
}


def admin(runtime: Runtime) -> dict[str, str]:
    return bearer(runtime.admin_tokens.first)


async def put(client: httpx.AsyncClient, runtime: Runtime, body: Any) -> httpx.Response:
    return await client.put("/admin/scopes", headers=admin(runtime), json=body)


async def put_ok(client: httpx.AsyncClient, runtime: Runtime, body: Any) -> dict[str, Any]:
    response = await put(client, runtime, body)
    assert response.status_code == 200, response.json()
    answer: dict[str, Any] = response.json()
    return answer


async def operator_events(runtime: Runtime) -> list[Event]:
    async with runtime.db.session(write=False) as session:
        result = await session.scalars(
            select(Event).where(Event.type == "scopes.updated").order_by(Event.id)
        )
        return list(result.all())


async def restricted_key(
    runtime: Runtime,
    account_id: str,
    scopes: list[str] | None,
    restrictions: dict[str, Any] | None = None,
    *,
    revoked: bool = False,
) -> str:
    async with runtime.db.session(write=True) as session:
        row = insert_key(session, account_id, revoked=revoked)
        row.scopes = scopes
        row.restrictions = restrictions
        return row.id


class TestGetCatalog:
    async def test_built_ins_only_at_first(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        response = await client.get("/admin/scopes", headers=admin(runtime))
        assert response.status_code == 200
        body = response.json()
        assert body == {
            "scopes": [
                {"name": name, "description": text, "builtin": True}
                for name, text in BUILTIN_SCOPES.items()
            ],
            "attributes": [],
        }

    async def test_needs_the_admin_token(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        expect_error(await client.get("/admin/scopes"), 401, "missing_api_key")
        wrong = bearer("kh_admin_" + "x" * 43)
        expect_error(await client.get("/admin/scopes", headers=wrong), 401, "invalid_api_key")
        account = await create_account(runtime)
        for response in (
            await client.get("/admin/scopes", headers=bearer(account.key)),
            await client.put("/admin/scopes", headers=bearer(account.key), json=MESSAGES),
        ):
            expect_error(response, 403, "insufficient_permissions")
        assert await operator_events(runtime) == []


class TestPutCatalog:
    async def test_replaces_and_answers_the_catalog(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        answer = await put_ok(client, runtime, MESSAGES)
        declared = [s for s in answer["scopes"] if not s["builtin"]]
        # Built-ins first, then the declared ones by name.
        assert [s["name"] for s in answer["scopes"][: len(BUILTIN_SCOPES)]] == list(BUILTIN_SCOPES)
        assert declared == [
            {"name": "domains:read", "description": "List sending domains.", "builtin": False},
            {"name": "messages:read", "description": "Read sent messages.", "builtin": False},
            {"name": "messages:send", "description": "Send messages.", "builtin": False},
        ]
        assert answer["attributes"] == [
            {"name": "senderDomain", "description": "The From: domain."}
        ]
        got = await client.get("/admin/scopes", headers=admin(runtime))
        assert got.json() == answer

        replaced = await put_ok(client, runtime, {"scopes": [{"name": "sms:send"}]})
        assert [s["name"] for s in replaced["scopes"] if not s["builtin"]] == ["sms:send"]
        assert replaced["scopes"][-1]["description"] == ""
        assert replaced["attributes"] == []  # left out: emptied

        async with runtime.db.session(write=False) as session:
            assert await catalog_names(session) == (frozenset({"sms:send"}), frozenset())

    async def test_an_event_in_the_operators_log_only_when_something_changed(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        account = await create_account(runtime)
        await put_ok(client, runtime, MESSAGES)
        await put_ok(client, runtime, MESSAGES)  # the same: nothing recorded
        changed = {
            "scopes": [
                {"name": "messages:send", "description": "Send email and SMS."},
                {"name": "sms:send"},
            ],
            "attributes": MESSAGES["attributes"],
        }
        await put_ok(client, runtime, changed)
        events = await operator_events(runtime)
        assert [e.data for e in events] == [
            {
                "scopes": {"added": ["domains:read", "messages:read", "messages:send"]},
                "attributes": {"added": ["senderDomain"]},
            },
            {
                "scopes": {
                    "added": ["sms:send"],
                    "removed": ["domains:read", "messages:read"],
                    "changed": ["messages:send"],
                }
            },
        ]
        assert all(e.account_id is None and e.actor_type == "admin" for e in events)

        log = await client.get("/admin/events", headers=admin(runtime))
        assert log.status_code == 200
        listed = [e for e in log.json()["events"] if e["type"] == "scopes.updated"]
        assert len(listed) == 2
        assert all("accountId" not in e for e in listed)
        own = await client.get("/events", headers=bearer(account.key))
        assert own.status_code == 200
        assert not [e for e in own.json()["events"] if e["type"] == "scopes.updated"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"scopes": [{"name": "Messages:send"}]}, "scopes[0].name"),
            ({"scopes": [{"name": "messages"}]}, "scopes[0].name"),
            ({"scopes": [{"name": "messages:send:now"}]}, "scopes[0].name"),
            ({"scopes": [{"name": "messages:*"}]}, "scopes[0].name"),
            ({"scopes": [{"name": "keys:read"}]}, "scopes[0].name"),
            ({"scopes": [{"name": "keys:delete"}]}, "scopes[0].name"),
            ({"scopes": [{"name": "a:b"}, {"name": "c:d"}, {"name": "a:b"}]}, "scopes[2].name"),
            ({"scopes": [], "attributes": [{"name": "sender-domain"}]}, "attributes[0].name"),
            ({"scopes": [], "attributes": [{"name": "SenderDomain"}]}, "attributes[0].name"),
            ({"scopes": [], "attributes": [{"name": "a"}, {"name": "a"}]}, "attributes[1].name"),
        ],
    )
    async def test_bad_names_are_400_naming_the_entry(
        self, client: httpx.AsyncClient, runtime: Runtime, body: Any, field: str
    ) -> None:
        error = expect_error(await put(client, runtime, body), 400, "validation_error")["error"]
        assert error["message"].startswith(field + " ")
        assert error["fix"].startswith(field + ":")
        assert await operator_events(runtime) == []

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"scopes": "messages:send"},
            {"scopes": [{"name": "a:b", "extra": 1}]},
            {"scopes": [{"name": "a:" + "b" * 100}]},
            {"scopes": [{"name": "a:b", "description": "x" * 501}]},
            {"scopes": [{"name": f"r:a{i}"} for i in range(1001)]},
            {"scopes": [], "unknown": True},
        ],
    )
    async def test_bad_bodies_are_400(
        self, client: httpx.AsyncClient, runtime: Runtime, body: Any
    ) -> None:
        expect_error(await put(client, runtime, body), 400, "validation_error")


class TestRemovingWhatKeysCarry:
    """A scope or attribute a key still carries cannot be removed (409 naming the keys)."""

    async def test_a_scope_in_use(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        account = await create_account(runtime)
        await put_ok(client, runtime, MESSAGES)
        key_id = await restricted_key(runtime, account.account_id, ["messages:send"])
        await restricted_key(runtime, account.account_id, ["domains:read"], revoked=True)
        without_send = {"scopes": [s for s in MESSAGES["scopes"] if s["name"] != "messages:send"]}
        error = expect_error(await put(client, runtime, without_send), 409, "conflict")["error"]
        assert "messages:send" in error["message"]
        assert key_id in error["message"]
        assert "fix" in error
        # A revoked key's scope can go; the catalog is unchanged by the refusal.
        got = await client.get("/admin/scopes", headers=admin(runtime))
        assert "messages:send" in {s["name"] for s in got.json()["scopes"]}
        await put_ok(
            client,
            runtime,
            {"scopes": [s for s in MESSAGES["scopes"] if s["name"] != "domains:read"]},
        )

    async def test_a_wildcard_holds_its_resource(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        account = await create_account(runtime)
        await put_ok(client, runtime, MESSAGES)
        key_id = await restricted_key(runtime, account.account_id, ["messages:*"])
        # Another messages: scope left: fine.
        await put_ok(client, runtime, {"scopes": [{"name": "messages:send"}]})
        # None left: the key's messages:* would name no resource.
        error = expect_error(
            await put(client, runtime, {"scopes": [{"name": "domains:read"}]}), 409, "conflict"
        )["error"]
        assert "messages:*" in error["message"]
        assert key_id in error["message"]

    async def test_an_attribute_in_use(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        account = await create_account(runtime)
        await put_ok(client, runtime, MESSAGES)
        key_id = await restricted_key(
            runtime, account.account_id, None, {"attributes": {"senderDomain": ["acme.com"]}}
        )
        error = expect_error(
            await put(client, runtime, {"scopes": MESSAGES["scopes"]}), 409, "conflict"
        )["error"]
        assert "senderDomain" in error["message"]
        assert key_id in error["message"]

    async def test_many_keys_are_counted_not_all_listed(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        account = await create_account(runtime)
        await put_ok(client, runtime, MESSAGES)
        for _ in range(7):
            await restricted_key(runtime, account.account_id, ["messages:read"])
        error = expect_error(
            await put(client, runtime, {"scopes": [{"name": "messages:send"}]}), 409, "conflict"
        )["error"]
        assert "by 7 key(s)" in error["message"]
        assert "and 2 more" in error["message"]

    @pytest.mark.postgresql_only
    async def test_a_key_written_while_the_catalog_is_replaced(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        """A transaction that read the catalog to write a key (``catalog_names``)
        and has not committed: the replace waits for it (the catalog's advisory
        lock, shared for the key, exclusive for the replace), then sees the key.
        Without the lock it saw no key and removed the scope the key then got.
        (SQLite serialises write transactions whole: nothing to interleave.)
        """
        account = await create_account(runtime)
        await put_ok(client, runtime, MESSAGES)
        read = asyncio.Event()
        release = asyncio.Event()

        async def write_key() -> None:
            async with runtime.db.session(write=True) as session:
                scopes, _ = await catalog_names(session)
                assert "messages:send" in scopes
                row = insert_key(session, account.account_id)
                row.scopes = ["messages:send"]
                await session.flush()
                read.set()
                await release.wait()

        writer = asyncio.create_task(write_key())
        await asyncio.wait_for(read.wait(), 10)
        replace = asyncio.create_task(put(client, runtime, {"scopes": [{"name": "sms:send"}]}))
        await until(lambda: replace_waits(runtime), "PUT /admin/scopes waits for the lock")
        assert not replace.done()
        release.set()
        await writer
        expect_error(await asyncio.wait_for(replace, 10), 409, "conflict")


async def replace_waits(runtime: Runtime) -> bool:
    async with runtime.db.engine.connect() as conn:
        result = await conn.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        )
        return bool(result.scalar_one() == 1)
