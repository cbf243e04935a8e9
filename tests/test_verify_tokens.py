"""``KEYHOUSE_VERIFY_TOKENS``: a credential for services that only verify keys.

Accepted by ``POST /verify``; refused with 403 ``insufficient_permissions``
(and a fix) on every other authenticated route, the operator's and the
accounts'. Least privilege: before it, ``/verify`` needed the full admin
token. No token reaches the test output.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from keyhouse.admin_tokens import AdminTokens, VerifyTokens, load_verify_tokens
from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.errors import ConfigurationError
from keyhouse.runtime import Runtime
from tests.factories import bearer, create_account, create_key, expect_error

VERIFY_TOKEN = "kh_verify_" + secrets.token_urlsafe(32)
SECOND_VERIFY_TOKEN = "kh_verify_" + secrets.token_urlsafe(32)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        verify_tokens=f"{VERIFY_TOKEN},{SECOND_VERIFY_TOKEN}", auth_failures_per_minute=2
    )


def leaked(response: httpx.Response) -> bool:
    return VERIFY_TOKEN in response.text or SECOND_VERIFY_TOKEN in response.text


class TestAccepted:
    async def test_by_verify(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        revoked = await create_key(runtime, acc.account_id, name="to revoke")
        await client.post(f"/keys/{revoked.row.id}/revoke", headers=acc.auth)
        for token in (VERIFY_TOKEN, SECOND_VERIFY_TOKEN):
            valid = await client.post("/verify", headers=bearer(token), json={"key": acc.key})
            assert valid.status_code == 200
            assert (valid.json()["code"], valid.json()["keyId"]) == ("valid", acc.key_id)
            refused = await client.post(
                "/verify", headers=bearer(token), json={"key": revoked.plaintext}
            )
            assert refused.json()["code"] == "revoked"

    async def test_admin_tokens_still_verify(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        response = await client.post(
            "/verify", headers=bearer(runtime.admin_tokens.first), json={"key": acc.key}
        )
        assert response.json()["code"] == "valid"

    async def test_other_credentials_are_refused_by_verify(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        body = {"key": acc.key}
        expect_error(await client.post("/verify", json=body), 401, "missing_api_key")
        expect_error(
            await client.post("/verify", headers=bearer(VERIFY_TOKEN + "x"), json=body),
            401,
            "invalid_api_key",
        )
        expect_error(
            await client.post("/verify", headers=acc.auth, json=body),
            403,
            "insufficient_permissions",
        )


OPERATOR_CALLS = [
    ("GET", "/admin/accounts", None),
    ("POST", "/admin/accounts", {"name": "Intruder"}),
    ("GET", "/admin/accounts/{account_id}", None),
    ("PATCH", "/admin/accounts/{account_id}", {"name": "Renamed"}),
    ("GET", "/admin/accounts/{account_id}/keys", None),
    ("POST", "/admin/accounts/{account_id}/keys", {"name": "n", "keyType": "secret"}),
    (
        "POST",
        "/admin/accounts/{account_id}/keys/import",
        {"key": "ext_" + "a" * 30, "name": "n", "keyType": "secret"},
    ),
    ("GET", "/admin/keys/{key_id}", None),
    ("PATCH", "/admin/keys/{key_id}", {"name": "n"}),
    ("POST", "/admin/keys/{key_id}/revoke", None),
    ("POST", "/admin/keys/{key_id}/roll", None),
    ("GET", "/admin/events", None),
]
ACCOUNT_CALLS = [
    ("GET", "/keys", None),
    ("POST", "/keys", {"name": "n", "keyType": "secret"}),
    ("GET", "/keys/{key_id}", None),
    ("PATCH", "/keys/{key_id}", {"name": "n"}),
    ("POST", "/keys/{key_id}/revoke", None),
    ("POST", "/keys/{key_id}/roll", None),
    ("GET", "/environments", None),
    ("POST", "/environments", {"name": "staging"}),
    ("GET", "/account", None),
    ("GET", "/events", None),
]


class TestRefusedEverywhereElse:
    @pytest.mark.parametrize(
        ("method", "path", "body"),
        OPERATOR_CALLS + ACCOUNT_CALLS,
        ids=[f"{m} {p}" for m, p, _ in OPERATOR_CALLS + ACCOUNT_CALLS],
    )
    async def test_403_with_a_fix(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        method: str,
        path: str,
        body: dict[str, Any] | None,
    ) -> None:
        acc = await create_account(runtime)
        url = path.format(account_id=acc.account_id, key_id=acc.key_id)
        # Three times, with auth_failures_per_minute=2: a refused verify token is not a
        # failed authentication, so its address is never slowed down to 429.
        for _ in range(3):
            response = await client.request(method, url, headers=bearer(VERIFY_TOKEN), json=body)
            error = expect_error(response, 403, "insufficient_permissions")["error"]
            assert "POST /verify" in error["message"]
            assert error["fix"]
            assert not leaked(response), "the error body echoes the token"
        # Nothing changed: the account's only key is as it was.
        listed = (await client.get("/keys", headers=acc.auth)).json()["keys"]
        assert [(k["id"], k["name"], k["revoked"]) for k in listed] == [
            (acc.key_id, "Default secret key", False)
        ]


class TestSetting:
    def test_unset_means_none(self, tmp_path: Path) -> None:
        admin = AdminTokens(["kh_admin_" + secrets.token_urlsafe(32)])
        assert load_verify_tokens(None, admin) is None
        assert load_verify_tokens("", admin) is None

    def test_parsed_and_compared_as_admin_tokens_are(self) -> None:
        admin = AdminTokens(["kh_admin_" + secrets.token_urlsafe(32)])
        tokens = load_verify_tokens(f" {VERIFY_TOKEN} , {SECOND_VERIFY_TOKEN},", admin)
        assert isinstance(tokens, VerifyTokens)
        assert tokens.matches(VERIFY_TOKEN)
        assert tokens.matches(SECOND_VERIFY_TOKEN)
        assert not tokens.matches(VERIFY_TOKEN[:-1])
        assert not tokens.matches(admin.first)
        assert repr(tokens) == "VerifyTokens(count=2)"

    @pytest.mark.parametrize("case", ["short", "inner space", "only commas", "an admin token"])
    async def test_a_bad_setting_stops_the_start(
        self, make_settings: Callable[..., Settings], case: str
    ) -> None:
        admin_token = "kh_admin_" + secrets.token_urlsafe(32)
        spec = {
            "short": "x" * 23,
            "inner space": "with space " + "x" * 24,
            "only commas": " , ,",
            "an admin token": f"{VERIFY_TOKEN},{admin_token}",
        }[case]
        app: FastAPI = create_app(make_settings(admin_tokens=admin_token, verify_tokens=spec))
        with pytest.raises(ConfigurationError) as raised:
            async with app.router.lifespan_context(app):
                pass  # pragma: no cover (the start must fail)
        message = str(raised.value)
        shown = any(token in message for token in (admin_token, VERIFY_TOKEN, "x" * 23))
        assert not shown, "the configuration error shows a token"
        assert message.startswith("KEYHOUSE_VERIFY_TOKENS")


async def test_openapi_documents_who_may_call(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["paths"]["/verify"]["post"]["security"] == [{"verifyToken": []}, {"adminToken": []}]
    assert "verifyToken" in doc["components"]["securitySchemes"]
    for method, path, _ in OPERATOR_CALLS:
        operation = doc["paths"][path][method.lower()]
        assert operation["security"] == [{"adminToken": []}], f"{method} {path}"
        assert operation.get("description"), f"{method} {path} has no OpenAPI text"
        for status in ("401", "403"):
            assert status in operation["responses"], f"{method} {path} {status}"
