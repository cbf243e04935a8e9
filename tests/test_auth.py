"""Authentication order and codes: missing → malformed → invalid → state → type.

No full key ever appears in test output: keys stay out of ``assert``
expressions and out of helper arguments.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from keyhouse.keys.format import ALPHABET, BODY_LEN
from keyhouse.runtime import Runtime
from tests.factories import (
    bearer,
    create_account,
    create_key,
    expect_error,
    expect_same_key,
    set_expiry,
)

# Helpers that take a key hide their frame (``__tracebackhide__``): pytest
# prints a shown frame's arguments on failure.


def same_key(actual: object, expected: str) -> None:
    """``expect_same_key`` without its frame (whose arguments are full keys) in the report."""
    __tracebackhide__ = True
    try:
        expect_same_key(actual, expected)
    except AssertionError as exc:
        raise AssertionError(str(exc)) from None


def change_one_char(key: str, prefix: str) -> str:
    """The key with one base62 character of its random part replaced."""
    __tracebackhide__ = True
    index = len(prefix) + 7
    replacement = ALPHABET[(ALPHABET.index(key[index]) + 1) % len(ALPHABET)]
    return key[:index] + replacement + key[index + 1 :]


async def expire_now(runtime: Runtime, key_id: str) -> None:
    await set_expiry(runtime, key_id, datetime.now(UTC) - timedelta(seconds=1))


async def revoke(client: httpx.AsyncClient, key_id: str, auth: dict[str, str]) -> None:
    __tracebackhide__ = True
    response = await client.post(f"/keys/{key_id}/revoke", headers=auth)
    assert response.status_code == 200


# -- missing ------------------------------------------------------------------------


async def test_no_authorization_header_is_missing_api_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/keys")
    body = expect_error(response, 401, "missing_api_key")
    assert body["error"].get("fix")


@pytest.mark.parametrize(
    "header", ["Basic xyz", "Bearer ", "Bearer", "Token abc", "sk_abc", "Bearer\t", "  "]
)
async def test_not_a_bearer_token_is_missing_api_key(
    client: httpx.AsyncClient, header: str
) -> None:
    response = await client.get("/keys", headers={"Authorization": header})
    expect_error(response, 401, "missing_api_key")


async def test_basic_scheme_with_a_valid_key_is_missing_api_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    response = await client.get("/keys", headers={"Authorization": "Basic " + acc.key})
    expect_error(response, 401, "missing_api_key")


# -- malformed and invalid ----------------------------------------------------------------


async def test_one_changed_character_is_malformed_api_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    typo = change_one_char(acc.key, runtime.settings.key_prefix_secret)
    assert runtime.key_format.parse(typo).kind.value == "malformed"
    response = await client.get("/keys", headers=bearer(typo))
    body = expect_error(response, 401, "malformed_api_key")
    assert body["error"].get("fix")


async def test_changed_public_key_is_malformed_api_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    public = await create_key(runtime, acc.account_id, key_type="public")
    typo = change_one_char(public.plaintext, runtime.settings.key_prefix_public)
    response = await client.get("/keys", headers=bearer(typo))
    expect_error(response, 401, "malformed_api_key")


@pytest.mark.parametrize("length", [BODY_LEN - 1, BODY_LEN + 1, 10])
async def test_prefix_with_wrong_length_is_invalid_api_key(
    client: httpx.AsyncClient, length: int
) -> None:
    token = "sk_" + ("aB3" * BODY_LEN)[:length]
    response = await client.get("/keys", headers=bearer(token))
    expect_error(response, 401, "invalid_api_key")


async def test_prefix_with_non_base62_character_is_invalid_api_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    index = len(runtime.settings.key_prefix_secret) + 7
    token = acc.key[:index] + "-" + acc.key[index + 1 :]
    response = await client.get("/keys", headers=bearer(token))
    expect_error(response, 401, "invalid_api_key")


@pytest.mark.parametrize("token", ["not-a-key", "x", "0123456789abcdef" * 4, "pk_live_123"])
async def test_non_native_string_is_invalid_api_key(client: httpx.AsyncClient, token: str) -> None:
    response = await client.get("/keys", headers=bearer(token))
    expect_error(response, 401, "invalid_api_key")


async def test_unknown_native_key_is_invalid_api_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await create_account(runtime)
    response = await client.get("/keys", headers=bearer(runtime.key_format.generate("secret")))
    expect_error(response, 401, "invalid_api_key")


@pytest.mark.parametrize("length", [201, 1000, 5000])
async def test_overlong_token_is_401_never_500(client: httpx.AsyncClient, length: int) -> None:
    response = await client.get("/keys", headers=bearer("sk_" + "a" * length))
    expect_error(response, 401, "invalid_api_key")


async def test_overlong_bearer_header_is_401_never_500(client: httpx.AsyncClient) -> None:
    header = "Bearer " + "x" * (5000 - len("Bearer "))
    response = await client.get("/keys", headers={"Authorization": header})
    expect_error(response, 401, "invalid_api_key")


async def test_overlong_non_bearer_header_is_401_never_500(client: httpx.AsyncClient) -> None:
    response = await client.get("/keys", headers={"Authorization": "B" * 5000})
    assert response.status_code == 401
    code = response.json()["error"]["code"]
    # Not the Bearer scheme (missing_api_key); the app refuses the length first (invalid).
    assert code in {"missing_api_key", "invalid_api_key"}
    expect_error(response, 401, code)


# -- state: revoked, expired ----------------------------------------------------------------


async def test_revoked_key_is_revoked_api_key(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acc = await create_account(runtime)
    other = await create_key(runtime, acc.account_id)
    response = await client.get("/keys", headers=acc.auth)
    assert response.status_code == 200
    await revoke(client, acc.key_id, bearer(other.plaintext))
    response = await client.get("/keys", headers=acc.auth)
    body = expect_error(response, 401, "revoked_api_key")
    assert body["error"].get("fix")
    # The key that revoked it still works.
    response = await client.get("/keys", headers=bearer(other.plaintext))
    assert response.status_code == 200


async def test_revoked_key_is_refused_everywhere(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    other = await create_key(runtime, acc.account_id)
    await revoke(client, acc.key_id, bearer(other.plaintext))
    for method, path in [
        ("GET", "/keys"),
        ("GET", f"/keys/{other.row.id}"),
        ("GET", "/environments"),
        ("POST", f"/keys/{other.row.id}/revoke"),
    ]:
        response = await client.request(method, path, headers=acc.auth)
        expect_error(response, 401, "revoked_api_key")


async def test_expired_key_is_expired_api_key_at_once(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    issued = await create_key(
        runtime, acc.account_id, expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    auth = bearer(issued.plaintext)
    response = await client.get("/keys", headers=auth)
    assert response.status_code == 200
    await expire_now(runtime, issued.row.id)
    response = await client.get("/keys", headers=auth)
    body = expect_error(response, 401, "expired_api_key")
    assert body["error"].get("fix")


async def test_expired_public_key_is_expired_not_forbidden(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    public = await create_key(
        runtime,
        acc.account_id,
        key_type="public",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    await expire_now(runtime, public.row.id)
    response = await client.get("/keys", headers=bearer(public.plaintext))
    expect_error(response, 401, "expired_api_key")


async def test_revoked_and_expired_key_is_revoked(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    issued = await create_key(
        runtime, acc.account_id, expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    await revoke(client, issued.row.id, acc.auth)
    await expire_now(runtime, issued.row.id)
    response = await client.get("/keys", headers=bearer(issued.plaintext))
    expect_error(response, 401, "revoked_api_key")


# -- type: public keys ----------------------------------------------------------------------


MANAGEMENT_CALLS = [
    ("GET", "/keys", None),
    ("POST", "/keys", {"name": "new", "keyType": "secret"}),
    ("GET", "/environments", None),
    ("POST", "/environments", {"name": "staging"}),
    ("GET", "/keys/{id}", None),
    ("POST", "/keys/{id}/revoke", None),
]


@pytest.mark.parametrize(("method", "path", "payload"), MANAGEMENT_CALLS)
async def test_public_key_is_403_on_management_endpoints(
    client: httpx.AsyncClient,
    runtime: Runtime,
    method: str,
    path: str,
    payload: dict[str, str] | None,
) -> None:
    acc = await create_account(runtime)
    public = await create_key(runtime, acc.account_id, key_type="public")
    response = await client.request(
        method, path.format(id=acc.key_id), json=payload, headers=bearer(public.plaintext)
    )
    body = expect_error(response, 403, "insufficient_permissions")
    assert body["error"].get("fix")
    # Nothing happened: the secret key still works and nothing was created.
    response = await client.get("/keys", headers=acc.auth)
    assert response.status_code == 200
    key_count = len(response.json()["keys"])
    assert key_count == 2
    revoked = [k["revoked"] for k in response.json()["keys"]]
    assert revoked == [False, False]
    response = await client.get("/environments", headers=acc.auth)
    assert response.json()["environments"] == []


async def test_revoked_public_key_is_401_before_403(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    public = await create_key(runtime, acc.account_id, key_type="public")
    await revoke(client, public.row.id, acc.auth)
    for method, path, payload in MANAGEMENT_CALLS:
        response = await client.request(
            method, path.format(id=acc.key_id), json=payload, headers=bearer(public.plaintext)
        )
        expect_error(response, 401, "revoked_api_key")


# -- the scheme -----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
async def test_scheme_is_case_insensitive(
    client: httpx.AsyncClient, runtime: Runtime, scheme: str
) -> None:
    acc = await create_account(runtime)
    response = await client.get("/keys", headers={"Authorization": f"{scheme} {acc.key}"})
    assert response.status_code == 200


async def test_extra_whitespace_after_scheme_is_accepted(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    response = await client.get("/keys", headers={"Authorization": f"Bearer   {acc.key}"})
    assert response.status_code == 200


async def test_valid_key_lists_its_own_key(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acc = await create_account(runtime)
    response = await client.get("/keys", headers=acc.auth)
    assert response.status_code == 200
    keys = response.json()["keys"]
    ids = [k["id"] for k in keys]
    assert ids == [acc.key_id]
    same_key(keys[0]["key"], acc.key)
