"""``X-Forwarded-For`` is believed from ``KEYHOUSE_TRUSTED_PROXIES`` only (issue 13, item 6).

uvicorn believed it from 127.0.0.1, so a local client wrote any address it
liked into the audit log (and chose the address its failed
authentications were counted under). Real ``keyhouse serve`` processes,
requests at once: with no trusted proxy every event carries the connection's
address whatever the headers say; with 127.0.0.1 trusted, the forwarded one.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import ValidationError

from keyhouse.config import Settings, settings_error_line
from tests.limits.conftest import served

ADMIN = "kh_admin_trusted_proxies_test_0123456789"
FORWARDED = ["203.0.113.7", "198.51.100.23", "192.0.2.1, 10.0.0.1", "::1", "not-an-address"]


def _ips(urls: list[str]) -> tuple[set[str | None], int]:
    """Create keys through each server at once, each request with some X-Forwarded-For;
    the addresses the audit log recorded, and how many events there were."""

    async def go() -> tuple[set[str | None], int]:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(timeout=30) as client:
            created = await client.post(
                f"{urls[0]}/admin/accounts", headers=admin, json={"name": "A"}
            )
            assert created.status_code == 201, created.text
            auth = {"Authorization": f"Bearer {created.json()['key']['key']}"}

            async def one(i: int) -> None:
                headers = {**auth, "X-Forwarded-For": FORWARDED[i % len(FORWARDED)]}
                resp = await client.post(
                    f"{urls[i % len(urls)]}/keys",
                    headers=headers,
                    json={"name": f"k{i}", "keyType": "public"},
                )
                assert resp.status_code == 201, resp.text

            await asyncio.gather(*(one(i) for i in range(20)))
            listed = await client.get(f"{urls[0]}/events?limit=100", headers=auth)
            assert listed.status_code == 200, listed.text
            events = [
                e
                for e in listed.json()["events"]
                if e["type"] == "key.created" and e["actor"]["type"] == "key"
            ]
            return {e.get("ip") for e in events}, len(events)

    return asyncio.run(go())


def test_no_proxy_is_trusted_by_default(settings: Settings) -> None:
    with served(settings, 2, KEYHOUSE_ADMIN_TOKENS=ADMIN) as urls:
        ips, count = _ips(urls)
    assert count == 20
    assert ips == {"127.0.0.1"}


def test_a_trusted_proxy_is_believed(settings: Settings) -> None:
    with served(
        settings, 2, KEYHOUSE_ADMIN_TOKENS=ADMIN, KEYHOUSE_TRUSTED_PROXIES="127.0.0.1"
    ) as urls:
        ips, count = _ips(urls)
    assert count == 20
    # uvicorn takes the last address that is not a trusted proxy; a value that is
    # not an address is kept as written (it came from the trusted proxy).
    assert ips == {"203.0.113.7", "198.51.100.23", "10.0.0.1", "::1", "not-an-address"}


@pytest.mark.sqlite_only
def test_another_proxy_is_not_believed(settings: Settings) -> None:
    with served(
        settings, 1, KEYHOUSE_ADMIN_TOKENS=ADMIN, KEYHOUSE_TRUSTED_PROXIES="10.0.0.0/8"
    ) as urls:
        ips, _ = _ips(urls)
    assert ips == {"127.0.0.1"}


class TestSetting:
    def test_addresses_and_networks(self) -> None:
        settings = Settings(trusted_proxies=" 10.0.0.5, 10.1.2.3/16 ,::1,")
        assert settings.trusted_proxies == "10.0.0.5/32,10.1.0.0/16,::1/128"

    @pytest.mark.parametrize("value", ["*", "proxy.internal", "10.0.0.0/33"])
    def test_anything_else_is_one_line(self, value: str) -> None:
        with pytest.raises(ValidationError) as caught:
            Settings(trusted_proxies=value)
        line = settings_error_line(caught.value)
        assert line.startswith("invalid setting: KEYHOUSE_TRUSTED_PROXIES:"), line
