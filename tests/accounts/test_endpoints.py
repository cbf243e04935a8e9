"""The operator API (``/admin/accounts``), admin tokens and ``GET /account``.

No full API key or admin token may reach the test output. Keys and tokens
stay out of ``assert`` expressions (pytest prints their operands) and out of
helper arguments (pytest prints a failing frame's arguments): helpers take
the ``runtime`` and build the admin header themselves, and key comparisons
go through ``expect_same_key`` or a boolean computed first.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from keyhouse.admin_tokens import ADMIN_TOKEN_FILE, MIN_TOKEN_LENGTH
from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.errors import ConfigurationError
from keyhouse.keys.format import Kind
from keyhouse.runtime import Runtime
from tests.factories import (
    bearer,
    create_account,
    create_environment,
    create_key,
    expect_error,
    expect_same_key,
    settings_env,
)

SettingsFactory = Callable[..., Settings]

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ACCOUNT_ID = re.compile(r"^acc_[0-9A-HJKMNP-TV-Z]{26}$")
KEY_ID = re.compile(r"^key_[0-9A-HJKMNP-TV-Z]{26}$")
UNKNOWN_ACCOUNT = "acc_" + "0" * 26
DEFAULT_LIMITS: dict[str, int | None] = {
    "maxKeys": 100,
    "monthlyRequests": None,
    "ratePerSecond": None,
    "burst": None,
}
ACCOUNT_MEMBERS = {"id", "name", "limits", "refuseSecretKeysFromBrowsers", "createdAt"}


# -- helpers (none takes a key or a token as an argument) ------------------------


def admin(runtime: Runtime) -> dict[str, str]:
    """The operator's Authorization header."""
    return bearer(runtime.admin_tokens.first)


def error_of(response: httpx.Response) -> Any:
    """What a failure message may show of a response: its error member, never a key."""
    body = response.json()
    return body.get("error") if isinstance(body, dict) else type(body).__name__


async def create_via_api(
    client: httpx.AsyncClient, runtime: Runtime, **body: Any
) -> dict[str, Any]:
    """POST /admin/accounts; the response holds the first key in full."""
    response = await client.post("/admin/accounts", headers=admin(runtime), json=body)
    status = response.status_code
    assert status == 201, response.json().get("error")
    created: dict[str, Any] = response.json()
    return created


async def get_via_api(
    client: httpx.AsyncClient, runtime: Runtime, account_id: str
) -> dict[str, Any]:
    response = await client.get(f"/admin/accounts/{account_id}", headers=admin(runtime))
    assert response.status_code == 200, error_of(response)
    account: dict[str, Any] = response.json()
    return account


async def list_via_api(client: httpx.AsyncClient, runtime: Runtime) -> list[dict[str, Any]]:
    response = await client.get("/admin/accounts", headers=admin(runtime))
    assert response.status_code == 200, error_of(response)
    body = response.json()
    assert set(body) == {"accounts"}
    accounts: list[dict[str, Any]] = body["accounts"]
    return accounts


async def patch_via_api(
    client: httpx.AsyncClient, runtime: Runtime, account_id: str, body: Any
) -> httpx.Response:
    return await client.patch(f"/admin/accounts/{account_id}", headers=admin(runtime), json=body)


def check_account_object(account: dict[str, Any]) -> None:
    assert set(account) == ACCOUNT_MEMBERS
    assert ACCOUNT_ID.match(account["id"])
    assert TIMESTAMP.match(account["createdAt"])
    assert set(account["limits"]) == set(DEFAULT_LIMITS)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """A fresh app on ``settings``, started and (on exit) shut down."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c, app.state.runtime


async def status_with_token(client: httpx.AsyncClient, token_index: int, tokens: list[str]) -> int:
    """GET /admin/accounts with ``tokens[token_index]``: only the status comes back."""
    __tracebackhide__ = True
    response = await client.get("/admin/accounts", headers=bearer(tokens[token_index]))
    return response.status_code


# -- create, list, get --------------------------------------------------------------


def own_view(response: httpx.Response) -> dict[str, Any]:
    """GET /account without its usage (checked here), to compare with the operator's view."""
    body: dict[str, Any] = response.json()
    usage = body.pop("usage")
    assert sorted(usage) == ["periodStart", "requests", "resetsAt"]
    assert isinstance(usage["requests"], int)
    return body


class TestCreateAccount:
    async def test_default_limits_and_first_key(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create_via_api(client, runtime, name="Acme")
        assert set(created) == {"account", "key"}
        account = created["account"]
        check_account_object(account)
        assert account["name"] == "Acme"
        assert account["limits"] == DEFAULT_LIMITS

        key = created["key"]
        assert set(key) == {"id", "key", "keyType", "accountId", "name", "revoked", "createdAt"}
        assert KEY_ID.match(key["id"])
        assert key["keyType"] == "secret"
        assert key["accountId"] == account["id"]
        assert key["revoked"] is False
        assert TIMESTAMP.match(key["createdAt"])
        # A native, account-wide secret key, returned in full.
        kind = runtime.key_format.parse(key["key"]).kind
        assert kind is Kind.NATIVE
        is_secret_prefix = key["key"].startswith(runtime.settings.key_prefix_secret)
        assert is_secret_prefix, "the first key is not a secret key"

    async def test_with_all_limits(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        limits = {"maxKeys": 5, "monthlyRequests": 1000, "ratePerSecond": 10, "burst": 20}
        created = await create_via_api(client, runtime, name="Big", limits=limits)
        assert created["account"]["limits"] == limits
        stored = await get_via_api(client, runtime, created["account"]["id"])
        assert stored == created["account"]

    async def test_limits_left_out_take_the_defaults(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create_via_api(
            client, runtime, name="Metered", limits={"monthlyRequests": 1000}
        )
        assert created["account"]["limits"] == {**DEFAULT_LIMITS, "monthlyRequests": 1000}
        unlimited = await create_via_api(client, runtime, name="Free", limits={"maxKeys": None})
        assert unlimited["account"]["limits"] == {**DEFAULT_LIMITS, "maxKeys": None}
        zero = await create_via_api(client, runtime, name="Zero", limits={"maxKeys": 0})
        assert zero["account"]["limits"] == {**DEFAULT_LIMITS, "maxKeys": 0}
        empty = await create_via_api(client, runtime, name="Empty", limits={})
        assert empty["account"]["limits"] == DEFAULT_LIMITS

    async def test_defaults_come_from_settings(self, make_settings: SettingsFactory) -> None:
        settings = make_settings(
            default_max_keys=7, default_monthly_requests=500, default_rate_per_second=3
        )
        async with running(settings) as (client, runtime):
            created = await create_via_api(client, runtime, name="Acme")
        assert created["account"]["limits"] == {
            "maxKeys": 7,
            "monthlyRequests": 500,
            "ratePerSecond": 3,
            "burst": None,
        }

    async def test_returned_key_authenticates(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create_via_api(client, runtime, name="Acme")
        auth = bearer(created["key"]["key"])

        keys = await client.get("/keys", headers=auth)
        assert keys.status_code == 200
        listed = keys.json()["keys"]
        assert [k["id"] for k in listed] == [created["key"]["id"]]
        expect_same_key(listed[0]["key"], created["key"]["key"])
        assert listed[0]["name"] == created["key"]["name"]
        assert "environmentId" not in listed[0]

        mine = await client.get("/account", headers=auth)
        assert mine.status_code == 200
        assert own_view(mine) == created["account"]

    async def test_listed_newest_first(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        assert await list_via_api(client, runtime) == []
        made = [(await create_via_api(client, runtime, name=n))["account"] for n in "ABC"]
        listed = await list_via_api(client, runtime)
        assert listed == list(reversed(made))
        for account in listed:
            check_account_object(account)

    async def test_accounts_made_elsewhere_are_listed(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        cli_made = await create_account(runtime, "From the CLI")
        api_made = await create_via_api(client, runtime, name="From the API")
        listed = await list_via_api(client, runtime)
        assert [a["id"] for a in listed] == [api_made["account"]["id"], cli_made.account_id]

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"name": ""},
            {"name": "   "},
            {"name": None},
            {"name": "x" * 101},
            {"name": "a\nb"},
            {"name": 5},
            {"name": "Acme", "plan": "gold"},
            {"name": "Acme", "limits": {"maxKeys": -1}},
            {"name": "Acme", "limits": {"monthlyRequests": "ten"}},
            {"name": "Acme", "limits": {"burst": 1.5}},
            {"name": "Acme", "limits": {"ratePerSecond": 0}},
            {"name": "Acme", "limits": {"seats": 3}},
            {"name": "Acme", "limits": "unlimited"},
            [{"name": "Acme"}],
        ],
        ids=repr,
    )
    async def test_bad_body_is_400_and_creates_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, body: Any
    ) -> None:
        response = await client.post("/admin/accounts", headers=admin(runtime), json=body)
        expect_error(response, 400, "validation_error")
        assert await list_via_api(client, runtime) == []


class TestGetAccount:
    async def test_get_one(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        created = await create_via_api(client, runtime, name="Acme")
        await create_via_api(client, runtime, name="Other")
        account = await get_via_api(client, runtime, created["account"]["id"])
        assert account == created["account"]
        check_account_object(account)

    @pytest.mark.parametrize(
        "account_id", [UNKNOWN_ACCOUNT, "acc_nope", "key_" + "0" * 26, "x" * 300]
    )
    async def test_unknown_id_is_404(
        self, client: httpx.AsyncClient, runtime: Runtime, account_id: str
    ) -> None:
        await create_via_api(client, runtime, name="Acme")
        response = await client.get(f"/admin/accounts/{account_id}", headers=admin(runtime))
        expect_error(response, 404, "not_found")


# -- update --------------------------------------------------------------------------


class TestUpdateAccount:
    async def test_only_the_members_sent_change(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create_via_api(client, runtime, name="Acme")
        account_id = created["account"]["id"]

        first = await patch_via_api(
            client, runtime, account_id, {"limits": {"monthlyRequests": 1000}}
        )
        assert first.status_code == 200, error_of(first)
        assert first.json() == {
            **created["account"],
            "limits": {**DEFAULT_LIMITS, "monthlyRequests": 1000},
        }

        second = await patch_via_api(client, runtime, account_id, {"limits": {"maxKeys": None}})
        assert second.status_code == 200, error_of(second)
        assert second.json()["limits"] == {
            "maxKeys": None,
            "monthlyRequests": 1000,
            "ratePerSecond": None,
            "burst": None,
        }
        assert second.json()["name"] == "Acme"

        third = await patch_via_api(
            client, runtime, account_id, {"limits": {"ratePerSecond": 5, "burst": 10}}
        )
        assert third.status_code == 200, error_of(third)
        expected = {
            **created["account"],
            "limits": {"maxKeys": None, "monthlyRequests": 1000, "ratePerSecond": 5, "burst": 10},
        }
        assert third.json() == expected
        assert await get_via_api(client, runtime, account_id) == expected

    async def test_rename_keeps_limits(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        created = await create_via_api(client, runtime, name="Acme", limits={"monthlyRequests": 50})
        account_id = created["account"]["id"]
        response = await patch_via_api(client, runtime, account_id, {"name": "Acme Corp"})
        assert response.status_code == 200, error_of(response)
        expected = {**created["account"], "name": "Acme Corp"}
        assert response.json() == expected
        assert await get_via_api(client, runtime, account_id) == expected
        # The account's own view follows.
        mine = await client.get("/account", headers=bearer(created["key"]["key"]))
        assert own_view(mine) == expected

    async def test_name_and_limits_together(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create_via_api(client, runtime, name="Acme")
        account_id = created["account"]["id"]
        response = await patch_via_api(
            client, runtime, account_id, {"name": "Renamed", "limits": {"burst": 3}}
        )
        assert response.status_code == 200, error_of(response)
        assert response.json() == {
            **created["account"],
            "name": "Renamed",
            "limits": {**DEFAULT_LIMITS, "burst": 3},
        }

    async def test_empty_body_changes_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create_via_api(client, runtime, name="Acme")
        account_id = created["account"]["id"]
        bodies: list[dict[str, Any]] = [{}, {"limits": {}}]
        for body in bodies:
            response = await patch_via_api(client, runtime, account_id, body)
            assert response.status_code == 200, body
            assert response.json() == created["account"]

    @pytest.mark.parametrize(
        "body",
        [
            {"limits": {"maxKeys": -1}},
            {"limits": {"monthlyRequests": -1}},
            {"limits": {"monthlyRequests": "ten"}},
            {"limits": {"maxKeys": 1.5}},
            {"limits": {"burst": 1.5}},
            {"limits": {"ratePerSecond": 0}},
            {"limits": {"burst": 0}},
            {"limits": {"maxKeys": 2**31}},
            {"limits": {"maxKeys": 10, "seats": 3}},
            {"limits": "unlimited"},
            {"limits": [5]},
            {"name": "Acme Corp", "plan": "gold"},
            {"id": "acc_" + "1" * 26},
            {"createdAt": "2026-01-01T00:00:00.000Z"},
            {"name": ""},
            {"name": "   "},
            {"name": "x" * 101},
            {"name": "a\tb"},
            # One bad member spoils the whole request: the good one is not applied.
            {"name": "Acme Corp", "limits": {"maxKeys": -1}},
            {"name": "", "limits": {"maxKeys": 5}},
            {"limits": {"maxKeys": 5, "ratePerSecond": 0}},
        ],
        ids=repr,
    )
    async def test_bad_body_is_400_and_changes_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, body: Any
    ) -> None:
        created = await create_via_api(client, runtime, name="Acme")
        account_id = created["account"]["id"]
        response = await patch_via_api(client, runtime, account_id, body)
        expect_error(response, 400, "validation_error")
        assert await get_via_api(client, runtime, account_id) == created["account"]
        events = await client.get("/events", headers=bearer(created["key"]["key"]))
        types = [e["type"] for e in events.json()["events"]]
        assert "account.updated" not in types

    @pytest.mark.parametrize(
        "limits",
        [{"maxKeys": "10"}, {"maxKeys": True}, {"burst": "5"}, {"monthlyRequests": False}],
        ids=repr,
    )
    async def test_limits_are_json_integers_not_strings_or_booleans(
        self, client: httpx.AsyncClient, runtime: Runtime, limits: dict[str, Any]
    ) -> None:
        """The issue: 'each an integer or null'. A string or a boolean is neither."""
        created = await create_via_api(client, runtime, name="Acme")
        account_id = created["account"]["id"]
        response = await patch_via_api(client, runtime, account_id, {"limits": limits})
        expect_error(response, 400, "validation_error")
        assert await get_via_api(client, runtime, account_id) == created["account"]

    async def test_unknown_account_is_404(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        response = await patch_via_api(client, runtime, UNKNOWN_ACCOUNT, {"name": "Ghost"})
        expect_error(response, 404, "not_found")
        assert await list_via_api(client, runtime) == []


# -- authentication of the operator API -------------------------------------------


OPERATOR_CALLS: list[tuple[str, str]] = [
    ("GET", "/admin/accounts"),
    ("POST", "/admin/accounts"),
    ("GET", "/admin/accounts/{account_id}"),
    ("PATCH", "/admin/accounts/{account_id}"),
    ("POST", "/admin/accounts/{account_id}/keys/import"),
]
OPERATOR_CALL_IDS = [f"{method} {path}" for method, path in OPERATOR_CALLS]


def operator_body(method: str, path: str) -> dict[str, Any] | None:
    """A valid body for the call (an import's key is made here, never a parameter)."""
    if path.endswith("/import"):
        return {"key": "ext_" + secrets.token_urlsafe(30), "name": "imported", "keyType": "secret"}
    if method == "POST":
        return {"name": "Intruder"}
    if method == "PATCH":
        return {"limits": {"maxKeys": None}}
    return None


class TestOperatorAuth:
    @pytest.mark.parametrize(("method", "path"), OPERATOR_CALLS, ids=OPERATOR_CALL_IDS)
    async def test_without_a_valid_admin_token_is_refused(
        self, client: httpx.AsyncClient, runtime: Runtime, method: str, path: str
    ) -> None:
        created = await create_via_api(client, runtime, name="Acme")
        account_id = created["account"]["id"]
        url = path.format(account_id=account_id)
        body = operator_body(method, path)
        public = await create_key(runtime, account_id, key_type="public")
        secret = await create_key(runtime, account_id, key_type="secret")
        token = runtime.admin_tokens.first
        near_miss = token[:-1] + ("A" if token[-1] != "A" else "B")

        attempts: list[tuple[str, dict[str, str], int, str]] = [
            ("no header", {}, 401, "missing_api_key"),
            ("empty bearer", {"Authorization": "Bearer "}, 401, "missing_api_key"),
            ("basic scheme", {"Authorization": "Basic dXNlcjpwYXNz"}, 401, "missing_api_key"),
            ("token without scheme", {"Authorization": token}, 401, "missing_api_key"),
            ("wrong token", bearer("kh_admin_" + "x" * 43), 401, "invalid_api_key"),
            ("near-miss token", bearer(near_miss), 401, "invalid_api_key"),
            ("token with a suffix", bearer(token + "x"), 401, "invalid_api_key"),
            ("first key", bearer(created["key"]["key"]), 403, "insufficient_permissions"),
            ("secret key", bearer(secret.plaintext), 403, "insufficient_permissions"),
            ("public key", bearer(public.plaintext), 403, "insufficient_permissions"),
        ]
        for label, headers, status, code in attempts:
            response = await client.request(method, url, headers=headers, json=body)
            got = (response.status_code, response.json()["error"]["code"])
            assert got == (status, code), label
            expect_error(response, status, code)
            leaked = token in response.text or near_miss in response.text
            assert not leaked, f"{label}: the error body echoes the admin token"

        # Nothing was created or changed by the refused calls.
        accounts = await list_via_api(client, runtime)
        assert accounts == [created["account"]]
        keys = await client.get("/keys", headers=bearer(created["key"]["key"]))
        assert len(keys.json()["keys"]) == 3

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/keys"),
            ("POST", "/keys"),
            ("GET", "/account"),
            ("GET", "/events"),
            ("GET", "/environments"),
        ],
    )
    async def test_admin_token_is_not_an_account_key(
        self, client: httpx.AsyncClient, runtime: Runtime, method: str, path: str
    ) -> None:
        await create_via_api(client, runtime, name="Acme")
        body = {"name": "n", "keyType": "secret"} if method == "POST" else None
        response = await client.request(method, path, headers=admin(runtime), json=body)
        expect_error(response, 401, "invalid_api_key")
        leaked = runtime.admin_tokens.first in response.text
        assert not leaked, "the error body echoes the admin token"


# -- admin tokens: settings and the generated file -----------------------------------


def _token(tag: str) -> str:
    return f"tok{tag}-{secrets.token_urlsafe(24)}"


class TestAdminTokens:
    async def test_two_tokens_from_settings_both_work(self, make_settings: SettingsFactory) -> None:
        tokens = [_token("A"), _token("B"), _token("C")]
        settings = make_settings(admin_tokens=f" {tokens[0]} , {tokens[1]},")
        async with running(settings) as (client, runtime):
            status = await status_with_token(client, 0, tokens)
            assert status == 200, "token #0"
            status = await status_with_token(client, 1, tokens)
            assert status == 200, "token #1"
            status = await status_with_token(client, 2, tokens)
            assert status == 401, "token #2"
            first_is_a = runtime.admin_tokens.first == tokens[0]
            assert first_is_a, "admin_tokens.first is not the first token of the setting"
            # Either token can write; the other one reads what it wrote.
            created = await client.post(
                "/admin/accounts", headers=bearer(tokens[1]), json={"name": "Acme"}
            )
            assert created.status_code == 201
            listed = await client.get("/admin/accounts", headers=bearer(tokens[0]))
            assert [a["id"] for a in listed.json()["accounts"]] == [created.json()["account"]["id"]]
        # The setting is used as given: no token is generated into the data dir.
        assert not (settings.data_dir / ADMIN_TOKEN_FILE).exists()

    @pytest.mark.parametrize(
        "case", ["one short token", "a short one among good ones", "only commas", "inner space"]
    )
    async def test_bad_token_setting_stops_the_start(
        self, make_settings: SettingsFactory, case: str
    ) -> None:
        good = _token("G")
        short = "s" * (MIN_TOKEN_LENGTH - 1)
        spec = {
            "one short token": short,
            "a short one among good ones": f"{good},{short}",
            "only commas": " , ,",
            "inner space": "with space " + "x" * MIN_TOKEN_LENGTH,
        }[case]
        app = create_app(make_settings(admin_tokens=spec))
        with pytest.raises(ConfigurationError) as raised:
            async with app.router.lifespan_context(app):
                pass  # pragma: no cover (the start must fail)
        message = str(raised.value)
        leaked = good in message or short in message
        assert not leaked, "the configuration error shows a token"
        assert "KEYHOUSE_ADMIN_TOKENS" in message

    # Generated only with the default database; with KEYHOUSE_DATABASE_URL the
    # token is required instead (tests/cli/test_data_dir.py).
    @pytest.mark.sqlite_only
    async def test_generated_token_is_private_and_survives_a_restart(
        self, make_settings: SettingsFactory
    ) -> None:
        settings = make_settings()
        path = settings.data_dir / ADMIN_TOKEN_FILE
        assert not path.exists()
        async with running(settings) as (client, runtime):
            tokens = [runtime.admin_tokens.first]
            status = await status_with_token(client, 0, tokens)
            assert status == 200, "token #0"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(settings.data_dir.stat().st_mode) & 0o077 == 0
        long_enough = len(tokens[0]) >= MIN_TOKEN_LENGTH
        assert long_enough, "the generated token is too short"
        in_file = path.read_text(encoding="utf-8").strip() == tokens[0]
        assert in_file, "the file does not hold the token in force"
        content_before = path.read_bytes()

        async with running(settings) as (client, runtime):
            same = runtime.admin_tokens.first == tokens[0]
            assert same, "a restart changed the generated admin token"
            status = await status_with_token(client, 0, tokens)
            assert status == 200, "token #0"
        unchanged = path.read_bytes() == content_before
        assert unchanged, "a restart rewrote the admin token file"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    async def test_cli_prints_the_token_in_force(self, make_settings: SettingsFactory) -> None:
        settings = make_settings()
        async with running(settings) as (_, runtime):
            token = runtime.admin_tokens.first
        environ = {**os.environ, **settings_env(settings)}
        proc = await anyio.run_process(
            [sys.executable, "-m", "keyhouse", "admin-token", "--json"],
            env=environ,
            cwd=settings.data_dir.parent,
            check=False,
        )
        assert proc.returncode == 0, "keyhouse admin-token --json failed"
        lines = proc.stdout.decode().splitlines()
        assert len(lines) == 1, "--json printed more than one line"
        printed = json.loads(lines[0])
        members = sorted(printed)
        assert members == ["adminToken"]
        same = printed["adminToken"] == token
        assert same, "keyhouse admin-token printed another token than the one in force"


# -- GET /account -------------------------------------------------------------------


class TestMyAccount:
    async def test_returns_the_callers_account_and_limits(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acme = await create_via_api(
            client, runtime, name="Acme", limits={"maxKeys": 3, "ratePerSecond": 2}
        )
        other = await create_via_api(client, runtime, name="Other", limits={"burst": 9})
        for created in (acme, other):
            response = await client.get("/account", headers=bearer(created["key"]["key"]))
            assert response.status_code == 200
            body = own_view(response)
            assert body == created["account"]
            assert body == await get_via_api(client, runtime, created["account"]["id"])
            check_account_object(body)
        mine = await client.get("/account", headers=bearer(acme["key"]["key"]))
        assert mine.json()["limits"] == {
            "maxKeys": 3,
            "monthlyRequests": None,
            "ratePerSecond": 2,
            "burst": None,
        }

    async def test_follows_a_limit_change(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create_via_api(client, runtime, name="Acme")
        account_id = created["account"]["id"]
        response = await patch_via_api(
            client, runtime, account_id, {"limits": {"monthlyRequests": 1000}}
        )
        assert response.status_code == 200
        mine = await client.get("/account", headers=bearer(created["key"]["key"]))
        assert mine.json()["limits"] == {**DEFAULT_LIMITS, "monthlyRequests": 1000}

    async def test_scoped_secret_key_sees_its_account(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "staging")
        scoped = await create_key(runtime, acc.account_id, environment_id=env.id)
        response = await client.get("/account", headers=bearer(scoped.plaintext))
        assert response.status_code == 200
        assert response.json()["id"] == acc.account_id

    async def test_public_key_and_no_key_are_refused(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        public = await create_key(runtime, acc.account_id, key_type="public")
        response = await client.get("/account", headers=bearer(public.plaintext))
        expect_error(response, 403, "insufficient_permissions")
        expect_error(await client.get("/account"), 401, "missing_api_key")


# -- audit -------------------------------------------------------------------------------


class TestAudit:
    async def test_account_events_have_the_admin_actor(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create_via_api(client, runtime, name="Acme")
        account_id = created["account"]["id"]
        response = await patch_via_api(
            client, runtime, account_id, {"name": "Acme Corp", "limits": {"monthlyRequests": 10}}
        )
        assert response.status_code == 200

        events = await client.get("/events", headers=bearer(created["key"]["key"]))
        assert events.status_code == 200
        listed = events.json()["events"]
        types = [e["type"] for e in listed]
        assert types == ["account.updated", "key.created", "account.created"]
        for event in listed:
            assert event["actor"] == {"type": "admin"}, event["type"]
            assert TIMESTAMP.match(event["createdAt"])
            assert None not in event.values()
        assert listed[1]["keyId"] == created["key"]["id"]
        assert "keyId" not in listed[0]
        assert "keyId" not in listed[2]
        leaked = created["key"]["key"] in events.text or runtime.admin_tokens.first in events.text
        assert not leaked, "an event holds a key or the admin token"

    async def test_each_change_is_one_event(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create_via_api(client, runtime, name="Acme")
        account_id = created["account"]["id"]
        for body in [{"name": "B"}, {"limits": {"maxKeys": 1}}, {"limits": {"maxKeys": None}}]:
            response = await patch_via_api(client, runtime, account_id, body)
            assert response.status_code == 200
        events = await client.get("/events", headers=bearer(created["key"]["key"]))
        updated = [e for e in events.json()["events"] if e["type"] == "account.updated"]
        assert len(updated) == 3
        assert all(e["actor"] == {"type": "admin"} for e in updated)

    async def test_other_accounts_do_not_see_the_events(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create_via_api(client, runtime, name="Acme")
        await patch_via_api(client, runtime, created["account"]["id"], {"name": "Renamed"})
        other = await create_via_api(client, runtime, name="Other")
        events = await client.get("/events", headers=bearer(other["key"]["key"]))
        assert {e["type"] for e in events.json()["events"]} == {"account.created", "key.created"}
