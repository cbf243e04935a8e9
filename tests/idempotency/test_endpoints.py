"""``Idempotency-Key`` on every write: a retry gets the first answer and changes nothing.

Each write (POST /keys, roll, revoke, import, POST /environments, POST
/admin/accounts) is sent twice with one key: the second answer is the
first, byte for byte, marked ``Idempotent-Replayed``, and nothing more is
stored (rows, audit events). Another request with that key is 409
``idempotency_key_reused``. Full keys never reach the test output: bodies
are compared as bytes, and keys are searched for, never printed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select, update

from keyhouse.app import create_app
from keyhouse.http.pipeline import DirectRoute, get_admin_idempotency, get_key_idempotency
from keyhouse.idempotency.purge import purge_expired
from keyhouse.models import Account, ApiKey, Environment, Event, IdempotencyRecord
from keyhouse.runtime import Runtime
from keyhouse.timeutil import utcnow
from tests.factories import AccountWithKey, bearer, create_account, create_key, expect_error
from tests.limits.helpers import account_on_plan


@dataclass(frozen=True)
class Write:
    """One write: how to send it, and another request to send with the same key."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    other_path: str
    other_json: Any


Prepare = Callable[[Runtime, AccountWithKey], Awaitable[Write]]


def admin(runtime: Runtime) -> dict[str, str]:
    return bearer(runtime.admin_tokens.first)


async def create(runtime: Runtime, acc: AccountWithKey) -> Write:
    body = {"name": "k", "keyType": "public"}
    return Write("POST", "/keys", acc.auth, body, "/keys", {**body, "name": "other"})


async def roll(runtime: Runtime, acc: AccountWithKey) -> Write:
    key_id = (await create_key(runtime, acc.account_id)).row.id
    path = f"/keys/{key_id}/roll"
    return Write("POST", path, acc.auth, {"expiresInSeconds": 0}, path, {"expiresInSeconds": 1})


async def revoke(runtime: Runtime, acc: AccountWithKey) -> Write:
    key_id = (await create_key(runtime, acc.account_id)).row.id
    path = f"/keys/{key_id}/revoke"
    return Write("POST", path, acc.auth, None, f"{path}?force=true", None)


async def import_(runtime: Runtime, acc: AccountWithKey) -> Write:
    path = f"/admin/accounts/{acc.account_id}/keys/import"
    body = {"key": "legacy_0123456789abcdefghij", "name": "old", "keyType": "public"}
    return Write("POST", path, admin(runtime), body, path, {**body, "name": "older"})


async def environment(runtime: Runtime, acc: AccountWithKey) -> Write:
    body = {"name": "production"}
    return Write("POST", "/environments", acc.auth, body, "/environments", {"name": "staging"})


async def account(runtime: Runtime, acc: AccountWithKey) -> Write:
    body = {"name": "Globex"}
    return Write("POST", "/admin/accounts", admin(runtime), body, "/admin/accounts", {"name": "X"})


async def admin_create(runtime: Runtime, acc: AccountWithKey) -> Write:
    path = f"/admin/accounts/{acc.account_id}/keys"
    body = {"name": "k", "keyType": "public"}
    return Write("POST", path, admin(runtime), body, path, {**body, "name": "other"})


async def admin_roll(runtime: Runtime, acc: AccountWithKey) -> Write:
    key_id = (await create_key(runtime, acc.account_id)).row.id
    path = f"/admin/keys/{key_id}/roll"
    body = {"expiresInSeconds": 0}
    return Write("POST", path, admin(runtime), body, path, {"expiresInSeconds": 1})


async def admin_revoke(runtime: Runtime, acc: AccountWithKey) -> Write:
    key_id = (await create_key(runtime, acc.account_id)).row.id
    path = f"/admin/keys/{key_id}/revoke"
    return Write("POST", path, admin(runtime), None, f"{path}?force=true", None)


WRITES = [
    create,
    roll,
    revoke,
    import_,
    environment,
    account,
    admin_create,
    admin_roll,
    admin_revoke,
]


async def send(
    client: httpx.AsyncClient, write: Write, key: str | None, *, other: bool = False
) -> httpx.Response:
    __tracebackhide__ = True  # its locals hold the request, and a response with a key
    headers = dict(write.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    path, body = (write.other_path, write.other_json) if other else (write.path, write.json)
    return await client.request(write.method, path, headers=headers, json=body)


async def stored(runtime: Runtime) -> dict[str, int]:
    """How many rows of each kind are stored: a replay adds none."""
    async with runtime.db.session(write=False) as session:
        counts = {}
        for model in (Account, ApiKey, Environment, Event, IdempotencyRecord):
            counts[model.__tablename__] = int(
                await session.scalar(select(func.count()).select_from(model)) or 0
            )
        return counts


async def records(runtime: Runtime) -> list[IdempotencyRecord]:
    async with runtime.db.session(write=False) as session:
        return list((await session.scalars(select(IdempotencyRecord))).all())


@pytest.mark.parametrize("prepare", WRITES, ids=lambda p: p.__name__.strip("_"))
class TestEveryWrite:
    async def test_a_retry_gets_the_first_answer_and_changes_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, prepare: Prepare
    ) -> None:
        write = await prepare(runtime, await create_account(runtime))
        first = await send(client, write, "retry-1")
        assert first.status_code in (200, 201)
        assert "idempotent-replayed" not in first.headers
        after_first = await stored(runtime)
        assert after_first["idempotency_keys"] == 1

        retry = await send(client, write, "retry-1")
        assert retry.status_code == first.status_code
        same_body = retry.content == first.content
        assert same_body
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.headers["content-type"] == "application/json"
        assert retry.headers["x-tracking-id"] != first.headers["x-tracking-id"]
        assert await stored(runtime) == after_first

    async def test_another_request_with_the_key_is_409_reused(
        self, client: httpx.AsyncClient, runtime: Runtime, prepare: Prepare
    ) -> None:
        write = await prepare(runtime, await create_account(runtime))
        assert (await send(client, write, "reused-1")).status_code in (200, 201)
        before = await stored(runtime)
        body = expect_error(
            await send(client, write, "reused-1", other=True), 409, "idempotency_key_reused"
        )
        assert body["error"]["fix"]
        assert await stored(runtime) == before

    async def test_the_stored_answer_holds_no_plaintext(
        self, client: httpx.AsyncClient, runtime: Runtime, prepare: Prepare
    ) -> None:
        write = await prepare(runtime, await create_account(runtime))
        first = await send(client, write, "secret-1")
        answer = first.json()
        # The full key of the answer (an environment's answer has none: its id then).
        shown = answer.get("key") or answer["id"]
        secret = shown["key"] if isinstance(shown, dict) else shown
        (record,) = await records(runtime)
        columns: tuple[object, ...] = (record.scope, record.key, record.fingerprint)
        columns += (record.status_code, record.response_ciphertext, record.enc_kid)
        stored_bytes = b"".join(
            value if isinstance(value, bytes) else str(value).encode() for value in columns
        )
        leaked = secret.encode() in stored_bytes or secret[-20:].encode() in stored_bytes
        assert not leaked, "the answer in plaintext in the idempotency table"
        assert first.content[:24] not in stored_bytes


class TestWhatIsStored:
    async def test_errors_are_not_stored_and_a_retry_runs_again(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        """A refused write changed nothing: the retry, once the cause is gone, succeeds."""
        acc = await account_on_plan(runtime, maxKeys=1)
        headers = {**acc.auth, "Idempotency-Key": "at-the-limit"}
        body = {"name": "k", "keyType": "public"}
        expect_error(
            await client.post("/keys", headers=headers, json=body), 402, "key_limit_reached"
        )
        assert await records(runtime) == []
        await client.patch(
            f"/admin/accounts/{acc.account_id}",
            headers=admin(runtime),
            json={"limits": {"maxKeys": 2}},
        )
        assert (await client.post("/keys", headers=headers, json=body)).status_code == 201
        assert len(await records(runtime)) == 1

    async def test_a_write_rolled_back_after_its_claim_leaves_no_record(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        unknown = {"name": "k", "keyType": "public", "environmentId": "env_" + "0" * 26}
        response = await client.post(
            "/keys", headers={**acc.auth, "Idempotency-Key": "rolled-back"}, json=unknown
        )
        expect_error(response, 404, "not_found")
        assert await records(runtime) == []

    async def test_a_json_body_counts_by_content_not_spelling(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        headers = {**acc.auth, "Idempotency-Key": "spelling", "Content-Type": "application/json"}
        first = await client.post(
            "/keys", headers=headers, content=b'{"name":"k","keyType":"public"}'
        )
        again = await client.post(
            "/keys", headers=headers, content=b'{ "keyType": "public",\n  "name": "k" }'
        )
        assert first.status_code == again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"

    async def test_the_key_belongs_to_the_calling_key(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        """Another key, even of the same account, with the same Idempotency-Key: a new request."""
        acc = await create_account(runtime)
        other = await create_key(runtime, acc.account_id)
        body = {"name": "k", "keyType": "public"}
        first = await client.post(
            "/keys", headers={**acc.auth, "Idempotency-Key": "mine"}, json=body
        )
        second = await client.post(
            "/keys", headers={**bearer(other.plaintext), "Idempotency-Key": "mine"}, json=body
        )
        assert first.status_code == second.status_code == 201
        assert "idempotent-replayed" not in second.headers
        assert first.json()["id"] != second.json()["id"]

    async def test_after_24_hours_the_key_is_new_again_and_the_record_is_purged(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        headers = {**acc.auth, "Idempotency-Key": "yesterday"}
        body = {"name": "k", "keyType": "public"}
        first = await client.post("/keys", headers=headers, json=body)
        async with runtime.db.session(write=True) as session:
            await session.execute(
                update(IdempotencyRecord).values(
                    created_at=utcnow() - timedelta(hours=24, seconds=1)
                )
            )
        again = await client.post("/keys", headers=headers, json={**body, "name": "changed"})
        assert again.status_code == 201
        assert again.json()["id"] != first.json()["id"]
        assert len(await records(runtime)) == 1

        async with runtime.db.session(write=True) as session:
            await session.execute(
                update(IdempotencyRecord).values(created_at=utcnow() - timedelta(hours=25))
            )
        assert await purge_expired(runtime.db) == 1
        assert await records(runtime) == []
        assert await purge_expired(runtime.db) == 0

    async def test_a_key_that_rolled_itself_away_cannot_retry(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        """As the README says: the retry must authenticate, and the key is expired."""
        acc = await create_account(runtime)
        headers = {**acc.auth, "Idempotency-Key": "self-roll"}
        path = f"/keys/{acc.key_id}/roll"
        assert (
            await client.post(path, headers=headers, json={"expiresInSeconds": 0})
        ).status_code == 201
        retry = await client.post(path, headers=headers, json={"expiresInSeconds": 0})
        expect_error(retry, 401, "expired_api_key")


class TestTheHeader:
    @pytest.mark.parametrize(
        "value",
        [b"", b"x" * 256, b"tab\there", "café".encode("latin-1")],
        ids=["empty", "256", "tab", "latin-1"],
    )
    async def test_a_bad_value_is_400(
        self, client: httpx.AsyncClient, runtime: Runtime, value: bytes
    ) -> None:
        acc = await create_account(runtime)
        headers = [(name.encode(), text.encode()) for name, text in acc.auth.items()]
        response = await client.post(
            "/keys",
            headers=[*headers, (b"Idempotency-Key", value)],
            json={"name": "k", "keyType": "public"},
        )
        body = expect_error(response, 400, "validation_error")
        assert "Idempotency-Key" in body["error"]["message"]
        assert body["error"]["fix"]
        assert await records(runtime) == []

    async def test_255_printable_characters_pass(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        value = "".join(chr(32 + i % 95) for i in range(255))
        response = await client.post(
            "/keys",
            headers={**acc.auth, "Idempotency-Key": value},
            json={"name": "k", "keyType": "public"},
        )
        assert response.status_code == 201

    async def test_two_headers_are_400(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        response = await client.post(
            "/keys",
            headers=[*acc.auth.items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
            json={"name": "k", "keyType": "public"},
        )
        expect_error(response, 400, "validation_error")

    async def test_every_route_with_the_step_stores_its_answer(self, runtime: Runtime) -> None:
        # The step claims the key; only a DirectRoute stores the answer under
        # the claim. A plain APIRoute with the step would claim and never
        # answer: every retry would wait, then get 409.
        app = create_app(runtime.settings)
        for route in app.routes:
            if isinstance(route, APIRoute) and any(
                d.call in (get_key_idempotency, get_admin_idempotency)
                for d in route.dependant.dependencies
            ):
                assert isinstance(route, DirectRoute), route.path

    async def test_every_write_documents_it_and_no_read_does(
        self, client: httpx.AsyncClient
    ) -> None:
        spec = (await client.get("/openapi.json")).json()
        with_header = {
            (method.upper(), path)
            for path, item in spec["paths"].items()
            for method, operation in item.items()
            if any(
                p["name"] == "Idempotency-Key" and p["in"] == "header"
                for p in operation.get("parameters", [])
            )
        }
        assert with_header == {
            ("POST", "/keys"),
            ("POST", "/keys/{key_id}/revoke"),
            ("POST", "/keys/{key_id}/roll"),
            ("POST", "/environments"),
            ("POST", "/admin/accounts"),
            ("POST", "/admin/accounts/{account_id}/keys/import"),
            ("POST", "/admin/accounts/{account_id}/keys"),
            ("POST", "/admin/keys/{key_id}/revoke"),
            ("POST", "/admin/keys/{key_id}/roll"),
        }
