"""POST /verify: the operator's platform asks about one key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from keyhouse.limits.plan import current_period
from keyhouse.runtime import Runtime
from keyhouse.timeutil import format_ts, utcnow
from tests.factories import (
    bearer,
    create_account,
    create_environment,
    create_key,
    set_expiry,
)


def admin(runtime: Runtime) -> dict[str, str]:
    return bearer(runtime.admin_tokens.first)


async def verify(client: httpx.AsyncClient, runtime: Runtime, key: Any) -> httpx.Response:
    return await client.post("/verify", headers=admin(runtime), json={"key": key})


async def test_valid_key_with_its_details(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acc = await create_account(runtime)
    env = await create_environment(runtime, acc.account_id, "production")
    expires = datetime(2099, 1, 1, tzinfo=UTC)
    issued = await create_key(
        runtime,
        acc.account_id,
        key_type="public",
        name="widget",
        environment_id=env.id,
        expires_at=expires,
    )
    resp = await verify(client, runtime, issued.plaintext)
    assert resp.status_code == 200
    body = resp.json()
    assert body.pop("usage") == {"requests": 1, "resetsAt": format_ts(current_period(utcnow()).end)}
    assert body == {
        "valid": True,
        "code": "valid",
        "keyId": issued.row.id,
        "accountId": acc.account_id,
        "environmentId": env.id,
        "keyType": "public",
        "name": "widget",
        "expiresAt": "2099-01-01T00:00:00.000Z",
    }


async def test_every_state_has_its_code(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acc = await create_account(runtime)
    revoked = await create_key(runtime, acc.account_id)
    assert (
        await client.post(f"/keys/{revoked.row.id}/revoke", headers=acc.auth)
    ).status_code == 200
    expired = await create_key(
        runtime, acc.account_id, expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    await set_expiry(runtime, expired.row.id, datetime.now(UTC) - timedelta(seconds=1))
    good = runtime.key_format.generate("secret")
    malformed = good[:-1] + ("A" if good[-1] != "A" else "B")
    cases = {
        "valid": acc.key,
        "revoked": revoked.plaintext,
        "expired": expired.plaintext,
        "malformed": malformed,
        "not_found": good,
    }
    for code, key in cases.items():
        body = (await verify(client, runtime, key)).json()
        assert body["code"] == code
        assert body["valid"] is (code == "valid")
        assert ("keyId" in body) is (code in {"valid", "revoked", "expired"})
        assert None not in body.values()


async def test_a_verification_is_a_use(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acc = await create_account(runtime)
    issued = await create_key(runtime, acc.account_id, key_type="public")
    await verify(client, runtime, issued.plaintext)
    listed = (await client.get("/keys", headers=acc.auth)).json()["keys"]
    by_id = {k["id"]: k for k in listed}
    assert "lastUsedAt" in by_id[issued.row.id]


@pytest.mark.parametrize("body", [{}, {"key": ""}, {"key": 5}, {"key": None}, {"key": "x" * 1025}])
async def test_bad_bodies_are_400(
    client: httpx.AsyncClient, runtime: Runtime, body: dict[str, Any]
) -> None:
    resp = await client.post("/verify", headers=admin(runtime), json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "validation_error"


async def test_only_the_operator_may_verify(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acc = await create_account(runtime)
    public = await create_key(runtime, acc.account_id, key_type="public")
    body = {"key": acc.key}
    missing = await client.post("/verify", json=body)
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "missing_api_key")
    for key in [acc.key, public.plaintext]:
        resp = await client.post("/verify", headers=bearer(key), json=body)
        assert resp.status_code == 403
        assert resp.json()["error"]["code"] == "insufficient_permissions"
    wrong = await client.post("/verify", headers=bearer("not-the-admin-token-xxxxxxxx"), json=body)
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_api_key")
