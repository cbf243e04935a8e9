"""Input limits: header lines and key strings have maximum lengths; body members
have bounds (what Python and the columns hold) and strict JSON types.

Oversized input is refused with the envelope (400/401/413), never a 500 and
never the server's own plain-text page. uvicorn with httptools has no header
limit of its own (an 8 MiB header line reaches the app), so keyhouse's
middleware limits are the ones clients meet: checked here in-process and
through a real ``keyhouse serve``.

No full key or admin token appears in test output: tokens stay out of
``assert`` expressions.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from keyhouse.config import Settings
from keyhouse.http.middleware import MAX_HEADER_LINE, MAX_HEADERS_TOTAL
from keyhouse.keys.verify import Verifier
from keyhouse.runtime import Runtime
from tests.factories import AccountWithKey, bearer, create_account, create_key, expect_error
from tests.limits.conftest import served

KIB = 1024


# -- header lines (in-process) ----------------------------------------------------------


async def test_header_line_over_limit_is_400_with_the_envelope(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/healthz", headers={"X-Big": "a" * MAX_HEADER_LINE})
    body = expect_error(response, 400, "validation_error")
    assert str(MAX_HEADER_LINE) in body["error"]["message"]
    assert body["error"].get("fix")


async def test_header_line_at_limit_passes(client: httpx.AsyncClient) -> None:
    name = "X-Big"
    response = await client.get("/healthz", headers={name: "a" * (MAX_HEADER_LINE - len(name))})
    assert response.status_code == 200


async def test_headers_over_total_limit_are_400(client: httpx.AsyncClient) -> None:
    # Each line well under the line limit; together over the total.
    count = MAX_HEADERS_TOTAL // (4 * KIB) + 1
    headers = {f"X-H{i}": "a" * (4 * KIB) for i in range(count)}
    response = await client.get("/healthz", headers=headers)
    body = expect_error(response, 400, "validation_error")
    assert str(MAX_HEADERS_TOTAL) in body["error"]["message"]
    assert body["error"].get("fix")


async def test_header_limit_applies_before_the_body_and_the_fast_path(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    # A valid admin token with an oversized header beside it: refused before
    # POST /verify's fast path or the body guard read anything.
    response = await client.post(
        "/verify",
        json={"key": "sk_nothing"},
        headers={**bearer(runtime.admin_tokens.first), "X-Big": "a" * (16 * KIB)},
    )
    expect_error(response, 400, "validation_error")


# -- Authorization ------------------------------------------------------------------------


async def test_authorization_of_100_kib_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/keys", headers=bearer("a" * (100 * KIB)))
    expect_error(response, 400, "validation_error")


async def test_authorization_over_its_own_cap_is_401(client: httpx.AsyncClient) -> None:
    # Under the header line limit, over deps' 1 KiB cap for Authorization.
    response = await client.get("/keys", headers=bearer("sk_" + "a" * (4 * KIB)))
    expect_error(response, 401, "invalid_api_key")


async def test_admin_token_over_its_cap_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/events", headers=bearer("a" * (4 * KIB)))
    expect_error(response, 401, "invalid_api_key")


# -- key strings ------------------------------------------------------------------------


async def test_verify_with_a_1_mib_key_is_413(client: httpx.AsyncClient, runtime: Runtime) -> None:
    response = await client.post(
        "/verify",
        json={"key": "sk_" + "a" * (1024 * KIB)},
        headers=bearer(runtime.admin_tokens.first),
    )
    expect_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("length", [1025, 10 * KIB, 60 * KIB])
async def test_verify_with_a_key_over_1024_characters_is_400(
    client: httpx.AsyncClient, runtime: Runtime, length: int
) -> None:
    payload = json.dumps({"key": "sk_" + "a" * (length - 3)})
    response = await client.post(
        "/verify",
        content=payload,
        headers={**bearer(runtime.admin_tokens.first), "Content-Type": "application/json"},
    )
    expect_error(response, 400, "validation_error")


async def test_verify_with_a_key_of_1024_characters_is_an_answer(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.post(
        "/verify",
        json={"key": "sk_" + "a" * 1021},
        headers=bearer(runtime.admin_tokens.first),
    )
    assert response.status_code == 200
    assert response.json()["valid"] is False


async def test_a_long_key_in_a_header_next_to_a_valid_one_is_harmless(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    # Headers the app does not read may be long (under the limit): no effect.
    acc = await create_account(runtime)
    response = await client.get("/keys", headers={**acc.auth, "X-Note": "b" * (6 * KIB)})
    assert response.status_code == 200


# -- through the real server --------------------------------------------------------------


@pytest.mark.sqlite_only
def test_real_server_answers_oversized_headers_with_the_envelope(settings: Settings) -> None:
    with served(settings, 1) as (url,), httpx.Client(base_url=url, timeout=30) as http:
        cases = [
            {"X-Big": "a" * (MAX_HEADER_LINE + 1)},
            {"X-Big": "a" * (1024 * KIB)},  # far past keyhouse's limit: the server has none
            bearer("a" * (100 * KIB)),
            {f"X-H{i}": "a" * (4 * KIB) for i in range(MAX_HEADERS_TOTAL // (4 * KIB) + 1)},
        ]
        for headers in cases:
            response = http.get("/keys", headers=headers)
            assert response.headers.get("content-type") == "application/json"
            expect_error(response, 400, "validation_error")
        # Under the limit, the request goes on (and is refused for its key).
        response = http.get("/keys", headers=bearer("sk_" + "a" * (4 * KIB)))
        expect_error(response, 401, "invalid_api_key")


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=ascii"])
async def test_verify_with_a_lone_surrogate_is_400_not_500(
    client: httpx.AsyncClient, runtime: Runtime, content_type: str
) -> None:
    # Found by fuzz/fuzz_verify.py: JSON's "\ud800" decodes to a string that
    # cannot be encoded (hashed); POST /verify's fast path answered 500.
    response = await client.post(
        "/verify",
        content=b'{"key": "sk_\\ud800abc"}',
        headers={**bearer(runtime.admin_tokens.first), "Content-Type": content_type},
    )
    expect_error(response, 400, "validation_error")


async def test_verifier_answers_not_found_for_a_lone_surrogate(runtime: Runtime) -> None:
    # The same key reaching the Verifier some other way: a verdict, no exception.
    verdict = await Verifier(runtime).verify("sk_\ud800")
    assert verdict.code == "not_found"


# -- bounds and types of request bodies (both engines) ---------------------------------------
#
# Every request body member is checked against what Python, the code and the
# columns hold, and its JSON type, before anything is stored: 400
# validation_error with a fix, and every table as it was.

LATEST = "9999-12-31T23:59:59.999999Z"


def admin_auth(runtime: Runtime) -> dict[str, str]:
    return bearer(runtime.admin_tokens.first)


async def stored(client: httpx.AsyncClient, runtime: Runtime, acc: AccountWithKey) -> Any:
    """What the account and the operator can see: keys (with expiry), environments,
    accounts (with limits) and the audit log's event types."""
    __tracebackhide__ = True
    keys = (await client.get("/keys", headers=acc.auth)).json()["keys"]
    environments = (await client.get("/environments", headers=acc.auth)).json()
    accounts = (await client.get("/admin/accounts", headers=admin_auth(runtime))).json()
    events = (await client.get("/events", headers=acc.auth, params={"limit": 100})).json()
    return (
        [(k["id"], k["name"], k.get("expiresAt"), k["revoked"]) for k in keys],
        environments,
        accounts,
        [e["type"] for e in events["events"]],
    )


def expect_refused(response: httpx.Response, member: str) -> None:
    __tracebackhide__ = True
    error = expect_error(response, 400, "validation_error")["error"]
    assert member in error["message"]
    assert error.get("fix")


class TestExpiresAt:
    @pytest.mark.parametrize(
        "value",
        [
            "9999-12-31T23:30:00-01:00",  # year 10000 in UTC: was a 500
            "9999-12-31T23:59:59.999999-00:01",
            "0001-01-01T00:30:00+01:00",
            1999999999,  # Unix time was taken as a date
            "1999999999",
            1.5,
            True,
            "2099-01-01T00:00Z",
            "2099-01-01T00:00:00+24:00",
        ],
    )
    async def test_out_of_range_or_not_a_string_is_400_and_stores_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, value: Any
    ) -> None:
        acc = await create_account(runtime)
        before = await stored(client, runtime, acc)
        response = await client.post(
            "/keys", headers=acc.auth, json={"name": "x", "keyType": "public", "expiresAt": value}
        )
        expect_refused(response, "expiresAt")
        assert await stored(client, runtime, acc) == before

    async def test_the_latest_time_python_holds_is_stored_and_shown(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        response = await client.post(
            "/keys", headers=acc.auth, json={"name": "x", "keyType": "secret", "expiresAt": LATEST}
        )
        assert response.status_code == 201
        made = response.json()
        assert made["expiresAt"] == "9999-12-31T23:59:59.999Z"
        shown = (await client.get(f"/keys/{made['id']}", headers=acc.auth)).json()
        assert shown["expiresAt"] == "9999-12-31T23:59:59.999Z"
        verdict = await client.post(
            "/verify", headers=admin_auth(runtime), json={"key": made["key"]}
        )
        assert verdict.json()["code"] == "valid"
        # A roll keeps it: the new key inherits the expiry.
        rolled = await client.post(
            f"/keys/{made['id']}/roll", headers=acc.auth, json={"expiresInSeconds": 0}
        )
        assert rolled.status_code == 201
        assert rolled.json()["expiresAt"] == "9999-12-31T23:59:59.999Z"


class TestStrictTypes:
    @pytest.mark.parametrize("grace", [True, False, "60", 60.0, 60.5, None, [60], {"s": 60}])
    async def test_roll_grace_is_a_json_integer(
        self, client: httpx.AsyncClient, runtime: Runtime, grace: Any
    ) -> None:
        acc = await create_account(runtime)
        key = await create_key(runtime, acc.account_id)
        before = await stored(client, runtime, acc)
        response = await client.post(
            f"/keys/{key.row.id}/roll", headers=acc.auth, json={"expiresInSeconds": grace}
        )
        expect_refused(response, "expiresInSeconds")
        assert await stored(client, runtime, acc) == before

    async def test_every_body_member_takes_its_json_type_only(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        key = await create_key(runtime, acc.account_id)
        admin = admin_auth(runtime)
        imported = {"key": "ext_" + "a" * 30, "name": "n", "keyType": "secret"}
        # (method, path, headers, a valid body, member, wrong values)
        cases: list[tuple[str, str, dict[str, str], dict[str, Any], str, list[Any]]] = [
            ("POST", "/keys", acc.auth, {"name": "n", "keyType": "secret"}, "name", [5, True]),
            ("POST", "/keys", acc.auth, {"name": "n", "keyType": "secret"}, "keyType", [1]),
            ("PATCH", f"/keys/{key.row.id}", acc.auth, {"name": "n"}, "name", [1, False]),
            ("POST", "/environments", acc.auth, {"name": "n"}, "name", [["n"], 7]),
            ("POST", "/admin/accounts", admin, {"name": "n"}, "name", [1]),
            (
                "POST",
                "/admin/accounts",
                admin,
                {"name": "n", "limits": {"maxKeys": 1}},
                "maxKeys",
                ["10", True, 1.0, 2**31, -1],
            ),
            (
                "PATCH",
                f"/admin/accounts/{acc.account_id}",
                admin,
                {"limits": {"monthlyRequests": 1}},
                "monthlyRequests",
                ["10", True, 1.5, 2**31, 2**63],
            ),
            (
                "PATCH",
                f"/admin/accounts/{acc.account_id}",
                admin,
                {"limits": {"ratePerSecond": 1}},
                "ratePerSecond",
                ["1", True, 0, 2**31],
            ),
            (
                "POST",
                f"/admin/accounts/{acc.account_id}/keys/import",
                admin,
                imported,
                "keyType",
                [True, 0],
            ),
            (
                "POST",
                f"/admin/accounts/{acc.account_id}/keys/import",
                admin,
                imported,
                "name",
                [1],
            ),
            ("POST", "/verify", admin, {"key": "sk_x"}, "key", [1, True]),
        ]
        before = await stored(client, runtime, acc)
        for method, path, headers, body, member, wrong in cases:
            for value in wrong:
                if member in {"maxKeys", "monthlyRequests", "ratePerSecond"}:
                    sent = {**body, "limits": {member: value}}
                else:
                    sent = {**body, member: value}
                response = await client.request(method, path, headers=headers, json=sent)
                expect_refused(response, member)
        assert await stored(client, runtime, acc) == before

    async def test_plan_limits_up_to_what_the_columns_hold_are_stored(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        # PostgreSQL's INTEGER is 32-bit: the largest value goes in and comes out.
        limits = dict.fromkeys(["maxKeys", "monthlyRequests", "ratePerSecond", "burst"], 2**31 - 1)
        response = await client.post(
            "/admin/accounts", headers=admin_auth(runtime), json={"name": "Big", "limits": limits}
        )
        assert response.status_code == 201
        account_id = response.json()["account"]["id"]
        shown = await client.get(f"/admin/accounts/{account_id}", headers=admin_auth(runtime))
        assert shown.json()["limits"] == limits


class TestNames:
    @pytest.mark.parametrize(
        "name", ["\u200b\u200b", "\ufeff", "\u3164", " \u00a0 ", "pr\u200bod", "\u0958" * 51]
    )
    async def test_blank_looking_names_are_400_everywhere_and_store_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, name: str
    ) -> None:
        acc = await create_account(runtime)
        key = await create_key(runtime, acc.account_id)
        admin = admin_auth(runtime)
        before = await stored(client, runtime, acc)
        requests: list[tuple[str, str, dict[str, str], dict[str, Any]]] = [
            ("POST", "/keys", acc.auth, {"name": name, "keyType": "secret"}),
            ("PATCH", f"/keys/{key.row.id}", acc.auth, {"name": name}),
            ("POST", "/environments", acc.auth, {"name": name}),
            ("POST", "/admin/accounts", admin, {"name": name}),
            ("PATCH", f"/admin/accounts/{acc.account_id}", admin, {"name": name}),
            (
                "POST",
                f"/admin/accounts/{acc.account_id}/keys/import",
                admin,
                {"key": "ext_" + "b" * 30, "name": name, "keyType": "secret"},
            ),
        ]
        for method, path, headers, body in requests:
            response = await client.request(method, path, headers=headers, json=body)
            expect_refused(response, "name")
        assert await stored(client, runtime, acc) == before

    async def test_names_are_stored_in_their_normal_form_everywhere(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        admin = admin_auth(runtime)
        given, normal = " cafe\u0301\u200b", "caf\u00e9"
        made = await client.post(
            "/keys", headers=acc.auth, json={"name": given, "keyType": "public"}
        )
        assert made.json()["name"] == normal
        renamed = await client.patch(
            f"/keys/{made.json()['id']}", headers=acc.auth, json={"name": "\ufeffcafe\u0301 2 "}
        )
        assert renamed.json()["name"] == normal + " 2"
        env = await client.post("/environments", headers=acc.auth, json={"name": given})
        assert env.json()["name"] == normal
        account = await client.post("/admin/accounts", headers=admin, json={"name": given})
        assert account.json()["account"]["name"] == normal
        # As stored: another session reads the same string back.
        listed = (await client.get("/keys", headers=acc.auth)).json()["keys"]
        assert listed[0]["name"] == normal + " 2"
        # NFC can lengthen a name: 50 x U+0958 is 100 characters stored (the
        # column's size, on PostgreSQL too), 51 is refused above.
        long = await client.post("/environments", headers=acc.auth, json={"name": "\u0958" * 50})
        assert long.status_code == 201
        assert len(long.json()["name"]) == 100
