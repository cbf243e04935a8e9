"""The operator's key API (``keys/admin_endpoints.py``) through the real app, both engines.

Every route: what it does for any account, who may call it (an admin token;
no header, a wrong token, an account's key or a verify token are refused
with the codes of the contract), 404 for what does not exist, and the audit
log's actor (the operator). No full key or admin token reaches the output:
keys are compared with ``expect_same_key``.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from keyhouse.config import Settings
from keyhouse.runtime import Runtime
from tests.factories import (
    AccountWithKey,
    bearer,
    committed_events,
    create_account,
    create_environment,
    create_key,
    expect_error,
    expect_same_key,
    set_limits,
)
from tests.keys.test_endpoints import check_contract

USER_AGENT = "platform-backend/1.0"
UNKNOWN_KEY = "key_01M8N3NYGGWVDAX48A847RRXA6"
UNKNOWN_ACCOUNT = "acc_01M8N3NYFGR8Q51QMH52B1FG59"
VERIFY_TOKEN = "kh_verify_" + secrets.token_urlsafe(32)


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    """The app of these tests also has a verify-only token."""
    result: Settings = make_settings(verify_tokens=VERIFY_TOKEN)
    return result


def admin(runtime: Runtime) -> dict[str, str]:
    return {**bearer(runtime.admin_tokens.first), "User-Agent": USER_AGENT}


def expect_status(response: httpx.Response, status: int) -> Any:
    __tracebackhide__ = True
    got = response.status_code
    code = response.json().get("error", {}).get("code") if got >= 400 else None
    assert got == status, f"status {got} ({code}), expected {status}"
    return response.json()


# -- who may call -------------------------------------------------------------------------

CALLS: list[tuple[str, str]] = [
    ("GET", "/admin/accounts/{account_id}/keys"),
    ("POST", "/admin/accounts/{account_id}/keys"),
    ("GET", "/admin/keys/{key_id}"),
    ("PATCH", "/admin/keys/{key_id}"),
    ("POST", "/admin/keys/{key_id}/revoke"),
    ("POST", "/admin/keys/{key_id}/roll"),
    ("GET", "/admin/events"),
]


def body_for(method: str, path: str) -> dict[str, Any] | None:
    if method == "PATCH":
        return {"name": "renamed"}
    if path.endswith("/keys") and method == "POST":
        return {"name": "new", "keyType": "secret"}
    if path.endswith("/roll"):
        return {"expiresInSeconds": 0}
    return None


@pytest.mark.parametrize(("method", "path"), CALLS, ids=[f"{m} {p}" for m, p in CALLS])
async def test_only_an_admin_token_may_call(
    client: httpx.AsyncClient, runtime: Runtime, method: str, path: str
) -> None:
    acc = await create_account(runtime)
    target = await create_key(runtime, acc.account_id, name="target")
    public = await create_key(runtime, acc.account_id, key_type="public")
    url = path.format(account_id=acc.account_id, key_id=target.row.id)
    body = body_for(method, path)
    attempts: list[tuple[str, dict[str, str], int, str]] = [
        ("no header", {}, 401, "missing_api_key"),
        ("basic scheme", {"Authorization": "Basic dXNlcjpwYXNz"}, 401, "missing_api_key"),
        ("wrong token", bearer("kh_admin_" + "x" * 43), 401, "invalid_api_key"),
        ("secret key", acc.auth, 403, "insufficient_permissions"),
        ("public key", bearer(public.plaintext), 403, "insufficient_permissions"),
        ("verify token", bearer(VERIFY_TOKEN), 403, "insufficient_permissions"),
    ]
    before = len(await committed_events(runtime, acc.account_id))
    for label, headers, status, code in attempts:
        response = await client.request(method, url, headers=headers, json=body)
        got = (response.status_code, response.json()["error"]["code"])
        assert got == (status, code), label
        error = expect_error(response, status, code)["error"]
        assert error.get("fix"), label
        leaked = VERIFY_TOKEN in response.text or runtime.admin_tokens.first in response.text
        assert not leaked, f"{label}: the error body echoes a token"
    # Refused calls changed nothing.
    assert len(await committed_events(runtime, acc.account_id)) == before
    allowed = await client.request(method, url, headers=admin(runtime), json=body)
    assert allowed.status_code in (200, 201), allowed.status_code


async def test_a_verify_token_is_told_what_it_may_do(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.get("/admin/events", headers=bearer(VERIFY_TOKEN))
    error = expect_error(response, 403, "insufficient_permissions")["error"]
    assert "POST /verify" in error["message"]
    assert "admin token" in error["fix"]


# -- GET/POST /admin/accounts/{id}/keys ----------------------------------------------------


class TestListKeys:
    async def test_every_key_of_the_account_and_no_other(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        env = await create_environment(runtime, acc.account_id, "staging")
        scoped = await create_key(runtime, acc.account_id, environment_id=env.id, name="scoped")
        public = await create_key(runtime, acc.account_id, key_type="public")
        await create_key(runtime, other.account_id, name="not theirs")
        body = expect_status(
            await client.get(f"/admin/accounts/{acc.account_id}/keys", headers=admin(runtime)),
            200,
        )
        check_contract(body)
        assert [k["id"] for k in body["keys"]] == [public.row.id, scoped.row.id, acc.key_id]
        # The same objects the account itself lists (whose call is a use of its key).
        own = expect_status(await client.get("/keys", headers=acc.auth), 200)
        for listing in (body, own):
            for key in listing["keys"]:
                key.pop("lastUsedAt", None)
        same = body == own
        assert same, "the operator's listing differs from the account's"

    async def test_filters(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "staging")
        scoped = await create_key(runtime, acc.account_id, environment_id=env.id)
        public = await create_key(runtime, acc.account_id, key_type="public")
        url = f"/admin/accounts/{acc.account_id}/keys"
        cases = {
            f"?environmentId={env.id}": [scoped.row.id],
            "?keyType=public": [public.row.id],
            "?keyType=secret&revoked=false": [scoped.row.id, acc.key_id],
            "?revoked=true": [],
        }
        for query, ids in cases.items():
            body = expect_status(await client.get(url + query, headers=admin(runtime)), 200)
            assert [k["id"] for k in body["keys"]] == ids, query
        expect_error(
            await client.get(url + "?keyType=private", headers=admin(runtime)),
            400,
            "validation_error",
        )

    async def test_unknown_account_is_404(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        for account_id in [UNKNOWN_ACCOUNT, "nope"]:
            response = await client.get(
                f"/admin/accounts/{account_id}/keys", headers=admin(runtime)
            )
            expect_error(response, 404, "not_found")


class TestCreateKey:
    async def test_created_in_full_and_the_operator_is_the_actor(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "production")
        expires = (datetime.now(UTC) + timedelta(days=3)).isoformat()
        body = {
            "name": "backend",
            "keyType": "secret",
            "environmentId": env.id,
            "expiresAt": expires,
        }
        made = expect_status(
            await client.post(
                f"/admin/accounts/{acc.account_id}/keys", headers=admin(runtime), json=body
            ),
            201,
        )
        assert (made["accountId"], made["environmentId"], made["name"]) == (
            acc.account_id,
            env.id,
            "backend",
        )
        assert runtime.key_format.parse(made["key"]).kind.value == "native"
        verdict = await client.post(
            "/verify", headers=bearer(VERIFY_TOKEN), json={"key": made["key"]}
        )
        assert verdict.json()["code"] == "valid"
        assert verdict.json()["environmentId"] == env.id
        (event,) = [
            e for e in await committed_events(runtime, acc.account_id) if e.key_id == made["id"]
        ]
        assert (event.type, event.actor_type, event.actor_id) == ("key.created", "admin", None)
        assert (event.ip, event.user_agent) == ("127.0.0.1", USER_AGENT)
        listed = expect_status(await client.get("/keys", headers=acc.auth), 200)
        (same,) = [k for k in listed["keys"] if k["id"] == made["id"]]
        expect_same_key(same["key"], made["key"])

    async def test_refusals(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        foreign_env = await create_environment(runtime, other.account_id, "theirs")
        url = f"/admin/accounts/{acc.account_id}/keys"
        cases: list[tuple[str, dict[str, Any], int, str]] = [
            (url, {"name": "x", "keyType": "private"}, 400, "validation_error"),
            (url, {"name": "x", "keyType": "secret", "revoked": True}, 400, "validation_error"),
            (
                url,
                {"name": "x", "keyType": "secret", "expiresAt": "2001-01-01T00:00:00Z"},
                400,
                "validation_error",
            ),
            (
                url,
                {"name": "x", "keyType": "secret", "environmentId": foreign_env.id},
                404,
                "not_found",
            ),
            (
                f"/admin/accounts/{UNKNOWN_ACCOUNT}/keys",
                {"name": "x", "keyType": "secret"},
                404,
                "not_found",
            ),
        ]
        for path, body, status, code in cases:
            response = await client.post(path, headers=admin(runtime), json=body)
            expect_error(response, status, code)
        listed = expect_status(await client.get(url, headers=admin(runtime)), 200)
        assert [k["id"] for k in listed["keys"]] == [acc.key_id]

    async def test_the_plan_holds(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        await set_limits(runtime, acc.account_id, maxKeys=1)
        response = await client.post(
            f"/admin/accounts/{acc.account_id}/keys",
            headers=admin(runtime),
            json={"name": "one too many", "keyType": "public"},
        )
        expect_error(response, 402, "key_limit_reached")


# -- /admin/keys/{id} ---------------------------------------------------------------------


async def two_accounts(runtime: Runtime) -> tuple[AccountWithKey, AccountWithKey]:
    return await create_account(runtime, "Acme"), await create_account(runtime, "Globex")


class TestGetKey:
    async def test_any_account_s_key(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acme, globex = await two_accounts(runtime)
        for acc in (acme, globex):
            body = expect_status(
                await client.get(f"/admin/keys/{acc.key_id}", headers=admin(runtime)), 200
            )
            assert (body["id"], body["accountId"]) == (acc.key_id, acc.account_id)
            expect_same_key(body["key"], acc.key)

    async def test_unknown_key_is_404(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        for key_id in [UNKNOWN_KEY, "key_x", "sk_notanid"]:
            response = await client.get(f"/admin/keys/{key_id}", headers=admin(runtime))
            error = expect_error(response, 404, "not_found")["error"]
            assert "/admin/accounts/" in error["fix"]


class TestRenameKey:
    async def test_renamed_with_an_event(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        body = expect_status(
            await client.patch(
                f"/admin/keys/{acc.key_id}", headers=admin(runtime), json={"name": "  café  "}
            ),
            200,
        )
        assert body["name"] == "café"
        events = [
            e for e in await committed_events(runtime, acc.account_id) if e.type == "key.renamed"
        ]
        assert [(e.actor_type, e.data) for e in events] == [
            ("admin", {"previousName": "Default secret key"})
        ]

    async def test_refusals(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        url = f"/admin/keys/{acc.key_id}"
        for body in [{"name": "x", "revoked": True}, {"name": ""}, {}]:
            expect_error(
                await client.patch(url, headers=admin(runtime), json=body), 400, "validation_error"
            )
        response = await client.patch(
            f"/admin/keys/{UNKNOWN_KEY}", headers=admin(runtime), json={"name": "x"}
        )
        expect_error(response, 404, "not_found")


class TestRevokeKey:
    async def test_revoked_and_refused_by_verify(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acme, globex = await two_accounts(runtime)
        extra = await create_key(runtime, globex.account_id, name="leaked")
        body = expect_status(
            await client.post(f"/admin/keys/{extra.row.id}/revoke", headers=admin(runtime)), 200
        )
        assert (body["revoked"], body["accountId"]) == (True, globex.account_id)
        verdict = await client.post(
            "/verify", headers=bearer(VERIFY_TOKEN), json={"key": extra.plaintext}
        )
        assert verdict.json()["code"] == "revoked"
        # Idempotent, and recorded once, with the operator as the actor.
        again = await client.post(f"/admin/keys/{extra.row.id}/revoke", headers=admin(runtime))
        assert expect_status(again, 200)["revoked"] is True
        revoked = [
            e for e in await committed_events(runtime, globex.account_id) if e.type == "key.revoked"
        ]
        assert [(e.key_id, e.actor_type) for e in revoked] == [(extra.row.id, "admin")]
        # The other account is untouched.
        assert (
            expect_status(await client.get("/keys", headers=acme.auth), 200)["keys"][0]["revoked"]
            is False
        )

    async def test_last_secret_key_needs_force(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        url = f"/admin/keys/{acc.key_id}/revoke"
        expect_error(await client.post(url, headers=admin(runtime)), 409, "last_secret_key")
        body = expect_status(await client.post(url + "?force=true", headers=admin(runtime)), 200)
        assert body["revoked"] is True
        expect_error(await client.get("/keys", headers=acc.auth), 401, "revoked_api_key")

    async def test_unknown_key_is_404(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        response = await client.post(f"/admin/keys/{UNKNOWN_KEY}/revoke", headers=admin(runtime))
        expect_error(response, 404, "not_found")


class TestRollKey:
    async def test_rolled_with_and_without_a_body(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        first = await create_key(runtime, acc.account_id, name="rolled")
        second = await create_key(runtime, acc.account_id, name="rolled at once")
        # No body: the default grace (a day).
        new = expect_status(
            await client.post(f"/admin/keys/{first.row.id}/roll", headers=admin(runtime)), 201
        )
        assert (new["name"], new["accountId"]) == ("rolled", acc.account_id)
        verdicts = {
            name: (
                await client.post("/verify", headers=bearer(VERIFY_TOKEN), json={"key": key})
            ).json()["code"]
            for name, key in [("old", first.plaintext), ("new", new["key"])]
        }
        assert verdicts == {"old": "valid", "new": "valid"}
        now = expect_status(
            await client.post(
                f"/admin/keys/{second.row.id}/roll",
                headers=admin(runtime),
                json={"expiresInSeconds": 0},
            ),
            201,
        )
        old = await client.post(
            "/verify", headers=bearer(VERIFY_TOKEN), json={"key": second.plaintext}
        )
        assert old.json()["code"] == "expired"
        assert now["id"] != second.row.id
        events = [
            e for e in await committed_events(runtime, acc.account_id) if e.type == "key.rolled"
        ]
        assert {(e.key_id, e.actor_type) for e in events} == {
            (first.row.id, "admin"),
            (second.row.id, "admin"),
        }

    async def test_refusals(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        key = await create_key(runtime, acc.account_id)
        url = f"/admin/keys/{key.row.id}/roll"
        expect_error(
            await client.post(url, headers=admin(runtime), json={"expiresInSeconds": -1}),
            400,
            "validation_error",
        )
        expect_status(await client.post(url, headers=admin(runtime)), 201)
        expect_error(await client.post(url, headers=admin(runtime)), 409, "conflict")
        response = await client.post(f"/admin/keys/{UNKNOWN_KEY}/roll", headers=admin(runtime))
        expect_error(response, 404, "not_found")


async def test_the_operator_s_calls_are_not_the_account_s_usage(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    await set_limits(runtime, acc.account_id, monthlyRequests=1, ratePerSecond=1, burst=1)
    for _ in range(3):
        made = await client.post(
            f"/admin/accounts/{acc.account_id}/keys",
            headers=admin(runtime),
            json={"name": "n", "keyType": "public"},
        )
        key_id = expect_status(made, 201)["id"]
        expect_status(await client.get(f"/admin/keys/{key_id}", headers=admin(runtime)), 200)
        expect_status(
            await client.get(f"/admin/accounts/{acc.account_id}/keys", headers=admin(runtime)), 200
        )
    usage = expect_status(await client.get("/account", headers=acc.auth), 200)["usage"]
    assert usage["requests"] == 0
    # The account's one request of the month, and its one token, are still there.
    expect_status(await client.get("/keys", headers=acc.auth), 200)
