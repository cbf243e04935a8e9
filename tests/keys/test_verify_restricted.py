"""``POST /verify`` holds a key to its scopes and restrictions (issue 15 item 3).

Each refusal has its code and a ``reason``; a refused verification consumes no
quota and no rate token; an unrestricted key answers as before.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keyhouse.runtime import Runtime
from tests.factories import AccountWithKey, bearer, create_account, set_limits
from tests.keys.test_restricted_keys import SEND, create, declare

PUBLIC_ORIGINS = ["https://app.example.com", "https://*.acme.com"]


def admin(runtime: Runtime) -> dict[str, str]:
    return bearer(runtime.admin_tokens.first)


async def verify(client: httpx.AsyncClient, runtime: Runtime, **body: Any) -> dict[str, Any]:
    resp = await client.post("/verify", headers=admin(runtime), json=body)
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


@pytest.fixture
async def acc(client: httpx.AsyncClient, runtime: Runtime) -> AccountWithKey:
    await declare(client, runtime)
    return await create_account(runtime)


@pytest.fixture
async def sender(client: httpx.AsyncClient, acc: AccountWithKey) -> dict[str, Any]:
    """The send-only key: messages:send, from 203.0.113.0/24, for acme.com."""
    return await create(
        client,
        acc.auth,
        scopes=[SEND],
        restrictions={
            "ipAllowlist": ["203.0.113.0/24"],
            "attributes": {"senderDomain": ["acme.com"]},
        },
    )


GOOD = {"scopes": [SEND], "ip": "203.0.113.7", "attributes": {"senderDomain": "acme.com"}}


class TestRefusals:
    async def test_within_its_restrictions_it_is_valid_and_shows_them(
        self, client: httpx.AsyncClient, runtime: Runtime, sender: dict[str, Any]
    ) -> None:
        body = await verify(client, runtime, key=sender["key"], **GOOD)
        assert body["valid"] is True
        assert body["code"] == "valid"
        assert "reason" not in body
        assert body["scopes"] == [SEND]
        assert body["restrictions"] == sender["restrictions"]
        assert body["usage"]["requests"] == 2  # the POST /keys that made it, and this

    @pytest.mark.parametrize(
        ("change", "code", "reason"),
        [
            ({"scopes": ["messages:read"]}, "insufficient_scope", "messages:read"),
            ({"scopes": [SEND, "keys:read"]}, "insufficient_scope", "keys:read"),
            ({"ip": "198.51.100.7"}, "ip_not_allowed", "198.51.100.7"),
            ({"ip": "::ffff:198.51.100.7"}, "ip_not_allowed", "ipAllowlist"),
            ({"ip": None}, "ip_not_allowed", "no ip was given"),
            ({"attributes": {"senderDomain": "evil.com"}}, "attribute_not_allowed", "senderDomain"),
            ({"attributes": {"channel": "sms"}}, "attribute_not_allowed", "no senderDomain"),
            ({"attributes": None}, "attribute_not_allowed", "senderDomain"),
        ],
    )
    async def test_each_refusal_has_its_code_and_reason(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        sender: dict[str, Any],
        change: dict[str, Any],
        code: str,
        reason: str,
    ) -> None:
        asked = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
        body = await verify(client, runtime, key=sender["key"], **asked)
        assert body["valid"] is False
        assert body["code"] == code
        assert reason in body["reason"], body["reason"]
        # Who the key is, still: the platform can log which key was refused.
        assert body["keyId"] == sender["id"]
        assert body["scopes"] == [SEND]
        assert "usage" not in body

    async def test_a_mapped_ipv4_address_is_checked_as_ipv4(
        self, client: httpx.AsyncClient, runtime: Runtime, sender: dict[str, Any]
    ) -> None:
        body = await verify(
            client, runtime, key=sender["key"], **{**GOOD, "ip": "::ffff:203.0.113.9"}
        )
        assert body["code"] == "valid"

    async def test_an_ip_with_a_zone_id_is_not_an_address_and_not_echoed(
        self, client: httpx.AsyncClient, runtime: Runtime, acc: AccountWithKey
    ) -> None:
        """Review r15: ``fe80::1%eth0`` passed the schema (ipaddress takes zones) and
        the reason repeated it as written, zone and all: text the caller chose."""
        lan = await create(client, acc.auth, restrictions={"ipAllowlist": ["fe80::/10"]})
        for zone in ("eth0", "zz<script>", "sk_live_notakey\n"):
            body = await verify(client, runtime, key=lan["key"], ip=f"fe80::1%{zone}")
            assert body["code"] == "ip_not_allowed"
            assert zone not in body["reason"]
            assert body["reason"].startswith("fe80::1 (with a zone id")
        assert (await verify(client, runtime, key=lan["key"], ip="fe80::1"))["valid"] is True
        # An unrestricted key does not look at the ip.
        assert (await verify(client, runtime, key=acc.key, ip="fe80::1%eth0"))["valid"] is True

    async def test_attributes_the_key_does_not_restrict_pass(
        self, client: httpx.AsyncClient, runtime: Runtime, sender: dict[str, Any]
    ) -> None:
        attributes = {"senderDomain": "acme.com", "channel": "sms"}
        body = await verify(
            client, runtime, key=sender["key"], **{**GOOD, "attributes": attributes}
        )
        assert body["code"] == "valid"

    async def test_origins_of_a_public_key(
        self, client: httpx.AsyncClient, runtime: Runtime, acc: AccountWithKey
    ) -> None:
        widget = await create(
            client,
            acc.auth,
            keyType="public",
            restrictions={"allowedOrigins": PUBLIC_ORIGINS},
        )
        cases = {
            "https://app.example.com": "valid",
            "https://app.example.com:443": "valid",
            "https://eu.acme.com": "valid",
            "https://acme.com": "origin_not_allowed",
            "http://app.example.com": "origin_not_allowed",
            "https://evil.example.com": "origin_not_allowed",
            "null": "origin_not_allowed",
        }
        for origin, code in cases.items():
            body = await verify(client, runtime, key=widget["key"], origin=origin)
            assert body["code"] == code, origin
        missing = await verify(client, runtime, key=widget["key"])
        assert missing["code"] == "origin_not_allowed"
        assert "no origin was given" in missing["reason"]

    async def test_an_unrestricted_key_grants_every_scope_and_ignores_ip_and_origin(
        self, client: httpx.AsyncClient, runtime: Runtime, acc: AccountWithKey
    ) -> None:
        body = await verify(
            client,
            runtime,
            key=acc.key,
            scopes=[SEND, "anything:else"],
            ip="198.51.100.1",
            origin="https://evil.example",
            attributes={"senderDomain": "evil.com"},
        )
        assert body["code"] == "valid"
        assert "scopes" not in body
        assert "restrictions" not in body

    async def test_a_wildcard_grants_its_resource(
        self, client: httpx.AsyncClient, runtime: Runtime, acc: AccountWithKey
    ) -> None:
        made = await create(client, acc.auth, scopes=["messages:*"])
        assert (await verify(client, runtime, key=made["key"], scopes=[SEND]))["code"] == "valid"
        refused = await verify(client, runtime, key=made["key"], scopes=["keys:read"])
        assert refused["code"] == "insufficient_scope"

    @pytest.mark.parametrize(
        "body",
        [
            {"scopes": ["messages:*"]},
            {"scopes": ["Messages"]},
            {"scopes": "messages:send"},
            {"ip": "203.0.113.0/24"},
            {"ip": "not an address"},
            {"ip": 1},
            {"origin": 1},
            {"attributes": {"senderDomain": ["acme.com"]}},
            {"attributes": []},
            {"scopes": None},
        ],
    )
    async def test_wrong_requests_are_400(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        sender: dict[str, Any],
        body: dict[str, Any],
    ) -> None:
        resp = await client.post(
            "/verify", headers=admin(runtime), json={"key": sender["key"], **body}
        )
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "validation_error"


class TestNothingConsumed:
    async def test_a_refusal_uses_no_quota_and_no_rate_token(
        self, client: httpx.AsyncClient, runtime: Runtime, acc: AccountWithKey
    ) -> None:
        made = await create(client, acc.auth, scopes=[SEND])
        await set_limits(runtime, acc.account_id, monthlyRequests=2, burst=1, ratePerSecond=1)
        for _ in range(5):
            refused = await verify(client, runtime, key=made["key"], scopes=["messages:read"])
            assert refused["code"] == "insufficient_scope"
        passed = await verify(client, runtime, key=made["key"], scopes=[SEND])
        assert passed["code"] == "valid"
        assert passed["usage"]["requests"] == 2  # the POST /keys that made it, and this
        assert passed["ratelimit"]["remaining"] == 0
        mine = await client.get("/account", headers=acc.auth)
        assert mine.json()["usage"]["requests"] == 2


class TestBrowserGuard:
    async def test_a_secret_key_given_with_an_origin(
        self, client: httpx.AsyncClient, runtime: Runtime, acc: AccountWithKey
    ) -> None:
        widget = await create(client, acc.auth, keyType="public")
        origin = "https://app.example.com"
        assert (await verify(client, runtime, key=acc.key, origin=origin))["code"] == "valid"
        resp = await client.patch(
            f"/admin/accounts/{acc.account_id}",
            headers=admin(runtime),
            json={"refuseSecretKeysFromBrowsers": True},
        )
        assert resp.status_code == 200
        refused = await verify(client, runtime, key=acc.key, origin=origin)
        assert refused["code"] == "secret_key_in_browser"
        assert refused["valid"] is False
        assert "origin" in refused["reason"]
        # Without an origin, and a public key with one, pass.
        assert (await verify(client, runtime, key=acc.key))["code"] == "valid"
        public = await verify(client, runtime, key=widget["key"], origin=origin)
        assert public["code"] == "valid"
