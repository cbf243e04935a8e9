"""Input limits: header lines and key strings have maximum lengths.

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

import httpx
import pytest

from keyhouse.config import Settings
from keyhouse.http.middleware import MAX_HEADER_LINE, MAX_HEADERS_TOTAL
from keyhouse.keys.verify import Verifier
from keyhouse.runtime import Runtime
from tests.factories import bearer, create_account, expect_error
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
