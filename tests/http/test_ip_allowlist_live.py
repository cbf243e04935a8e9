"""A key's IP allowlist through a real ``keyhouse serve`` (issue 15 item 4): the
client's address is the connection's, or the forwarded one when the connection
comes from ``KEYHOUSE_TRUSTED_PROXIES`` (uvicorn's proxy headers, as
tests/test_proxies.py shows for the audit log); never a header a client chose.
"""

from __future__ import annotations

import asyncio

import httpx

from keyhouse.config import Settings
from tests.factories import bearer
from tests.limits.conftest import served
from tests.test_scale_out import prepared_account

ALLOWED = "203.0.113.0/24"


def restricted_key(url: str, auth: dict[str, str]) -> dict[str, str]:
    made = httpx.post(
        f"{url}/keys",
        headers=auth,
        json={"name": "office", "keyType": "secret", "restrictions": {"ipAllowlist": [ALLOWED]}},
    )
    assert made.status_code == 201, made.text
    return bearer(made.json()["key"])


def code_of(resp: httpx.Response) -> str:
    return "ok" if resp.status_code == 200 else str(resp.json()["error"]["code"])


def test_behind_a_trusted_proxy_the_forwarded_address_counts(settings: Settings) -> None:
    acc = asyncio.run(prepared_account(settings))
    with served(settings, 1, KEYHOUSE_TRUSTED_PROXIES="127.0.0.1") as [url]:
        auth = restricted_key(url, acc.auth)
        cases = {
            "203.0.113.7": "ok",
            "198.51.100.7": "ip_not_allowed",
            # uvicorn takes the last hop that is not a trusted proxy.
            "203.0.113.7, 198.51.100.7": "ip_not_allowed",
            "198.51.100.7, 203.0.113.7": "ok",
            "not-an-address": "ip_not_allowed",  # fail closed
        }
        for forwarded, expected in cases.items():
            resp = httpx.get(f"{url}/keys", headers={**auth, "X-Forwarded-For": forwarded})
            assert code_of(resp) == expected, forwarded
            if expected != "ok":
                assert resp.status_code == 403
        # The proxy's own address, with no header: 127.0.0.1 is not allowed.
        assert code_of(httpx.get(f"{url}/keys", headers=auth)) == "ip_not_allowed"


def test_without_a_trusted_proxy_the_header_is_ignored(settings: Settings) -> None:
    acc = asyncio.run(prepared_account(settings))
    with served(settings, 1) as [url]:
        auth = restricted_key(url, acc.auth)
        resp = httpx.get(f"{url}/keys", headers={**auth, "X-Forwarded-For": "203.0.113.7"})
        assert resp.status_code == 403
        assert code_of(resp) == "ip_not_allowed"
