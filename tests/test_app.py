"""The HTTP envelope on every non-2xx, the request middleware, logs, OpenAPI, meta.

No full key ever appears in test output: keys are compared with
``expect_same_key`` or kept out of ``assert`` expressions entirely.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from keyhouse import errors
from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.runtime import Runtime
from tests.factories import bearer, create_account, expect_error

MAX_BODY = 64 * 1024
KEY_QUERY_NAMES = ["key", "api_key", "apiKey", "token", "access_token"]
ERROR_STATUSES = ["400", "401", "402", "500", "502"]


# -- helpers ------------------------------------------------------------------------


def find_nulls(value: object, path: str = "$") -> list[str]:
    """Paths of every null inside a JSON value."""
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in find_nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in find_nulls(v, f"{path}[{i}]")]
    return []


async def make_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


# -- routing errors -------------------------------------------------------------------


async def test_unknown_route_is_404_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route")
    body = expect_error(response, 404, "not_found")
    assert body["error"].get("fix")


async def test_wrong_method_is_405_method_not_allowed(client: httpx.AsyncClient) -> None:
    response = await client.delete("/keys")
    expect_error(response, 405, "method_not_allowed")
    allow = response.headers.get("allow")
    assert allow is not None
    assert "GET" in {m.strip() for m in allow.split(",")}


async def test_405_allow_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    # RFC 9110 §15.5.6: Allow lists the target resource's supported methods;
    # /keys serves GET and POST.
    response = await client.delete("/keys")
    expect_error(response, 405, "method_not_allowed")
    allow = {m.strip() for m in response.headers.get("allow", "").split(",")}
    assert {"GET", "POST"} <= allow


# -- body guards ----------------------------------------------------------------------


async def test_body_over_limit_with_content_length_is_413(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    response = await client.post(
        "/keys",
        content=b" " * (MAX_BODY + 1),
        headers={**acc.auth, "Content-Type": "application/json"},
    )
    assert "content-length" in {k.lower() for k in response.request.headers}
    body = expect_error(response, 413, "payload_too_large")
    assert body["error"].get("fix")


async def test_body_over_limit_streamed_without_content_length_is_413(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY // 4096 + 2):
            yield b" " * 4096

    response = await client.post(
        "/keys", content=chunks(), headers={**acc.auth, "Content-Type": "application/json"}
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    expect_error(response, 413, "payload_too_large")


async def test_body_at_limit_passes_the_size_guard(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    payload = json.dumps({"name": "x" * 200, "keyType": "secret"}).encode()
    payload += b" " * (MAX_BODY - len(payload))
    assert len(payload) == MAX_BODY
    response = await client.post(
        "/keys", content=payload, headers={**acc.auth, "Content-Type": "application/json"}
    )
    # Past the size guard: the name (200 characters) is what is refused.
    expect_error(response, 400, "validation_error")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_non_json_body_is_415(
    client: httpx.AsyncClient, runtime: Runtime, content_type: str | None
) -> None:
    acc = await create_account(runtime)
    headers = dict(acc.auth)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await client.post(
        "/keys", content=b'{"name": "x", "keyType": "secret"}', headers=headers
    )
    body = expect_error(response, 415, "unsupported_media_type")
    assert body["error"].get("fix")


async def test_json_content_type_with_charset_is_accepted(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    response = await client.post(
        "/keys",
        content=b'{"name": "x", "keyType": "public"}',
        headers={**acc.auth, "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201


async def test_malformed_json_is_400_validation_error(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    response = await client.post(
        "/keys",
        content=b'{"name": "x", "keyType":',
        headers={**acc.auth, "Content-Type": "application/json"},
    )
    body = expect_error(response, 400, "validation_error")
    assert body["error"].get("fix")


async def test_missing_body_is_400(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acc = await create_account(runtime)
    response = await client.post("/keys", headers=acc.auth)
    expect_error(response, 400, "validation_error")


async def test_unknown_member_is_400_naming_it(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acc = await create_account(runtime)
    response = await client.post(
        "/keys", json={"name": "x", "keyType": "secret", "revoked": True}, headers=acc.auth
    )
    body = expect_error(response, 400, "validation_error")
    assert "revoked" in body["error"]["message"]


@pytest.mark.parametrize(
    ("name", "value"), [("revoked", "maybe"), ("keyType", "admin"), ("environmentId", "e" * 65)]
)
async def test_bad_query_filter_is_400_with_fix(
    client: httpx.AsyncClient, runtime: Runtime, name: str, value: str
) -> None:
    acc = await create_account(runtime)
    response = await client.get("/keys", params={name: value}, headers=acc.auth)
    body = expect_error(response, 400, "validation_error")
    assert body["error"].get("fix")
    assert name in body["error"]["message"]


# -- keys in the query string ---------------------------------------------------------


@pytest.mark.parametrize("name", KEY_QUERY_NAMES)
async def test_key_like_query_name_is_400_key_in_query(
    client: httpx.AsyncClient, runtime: Runtime, name: str
) -> None:
    acc = await create_account(runtime)
    response = await client.get("/keys", params={name: "whatever"}, headers=acc.auth)
    body = expect_error(response, 400, "key_in_query")
    assert body["error"].get("fix")


@pytest.mark.parametrize("name", KEY_QUERY_NAMES)
async def test_key_in_query_is_not_used_to_authenticate(
    client: httpx.AsyncClient, runtime: Runtime, name: str
) -> None:
    acc = await create_account(runtime)
    response = await client.get("/keys", params={name: acc.key})
    expect_error(response, 400, "key_in_query")


async def test_key_in_query_is_refused_on_any_route(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    response = await client.get("/healthz", params={"token": acc.key})
    expect_error(response, 400, "key_in_query")


async def test_native_key_as_query_value_is_key_in_query(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    response = await client.get("/keys", params={"q": acc.key}, headers=acc.auth)
    expect_error(response, 400, "key_in_query")


async def test_public_key_as_query_value_is_key_in_query(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    public = runtime.key_format.generate("public")
    response = await client.get("/keys", params={"q": public}, headers=acc.auth)
    expect_error(response, 400, "key_in_query")


async def test_ordinary_query_parameters_pass(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acc = await create_account(runtime)
    response = await client.get(
        "/keys", params={"keyType": "secret", "revoked": "false"}, headers=acc.auth
    )
    assert response.status_code == 200


# -- tracking id, security headers, envelope ------------------------------------------


async def test_tracking_id_on_2xx_and_unique(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acc = await create_account(runtime)
    ids = []
    for path in ["/healthz", "/readyz", "/keys", "/keys", "/healthz"]:
        response = await client.get(path, headers=acc.auth)
        assert response.status_code == 200
        ids.append(response.headers["x-tracking-id"])
    assert all(i.startswith("req_") for i in ids)
    assert len(set(ids)) == len(ids)


async def test_tracking_id_differs_between_errors(client: httpx.AsyncClient) -> None:
    first = await client.get("/nope")
    second = await client.get("/nope")
    a = expect_error(first, 404, "not_found")["trackingId"]
    b = expect_error(second, 404, "not_found")["trackingId"]
    assert a != b


@pytest.mark.parametrize(
    ("method", "path", "params", "status"),
    [
        ("GET", "/healthz", None, 200),
        ("GET", "/keys", None, 200),
        ("GET", "/keys", {"token": "x"}, 400),
        ("GET", "/nope", None, 404),
        ("DELETE", "/keys", None, 405),
    ],
)
async def test_security_headers(
    client: httpx.AsyncClient,
    runtime: Runtime,
    method: str,
    path: str,
    params: dict[str, str] | None,
    status: int,
) -> None:
    acc = await create_account(runtime)
    response = await client.request(method, path, params=params, headers=acc.auth)
    assert response.status_code == status
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-tracking-id"].startswith("req_")


async def test_unauthenticated_error_has_security_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/keys")
    expect_error(response, 401, "missing_api_key")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"


async def test_error_bodies_have_no_nulls_and_omit_unset_members(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    calls: list[tuple[str, dict[str, str] | None, dict[str, str], int, str]] = [
        ("/nope", None, {}, 404, "not_found"),
        ("/keys", None, {}, 401, "missing_api_key"),
        ("/keys", {"revoked": "maybe"}, acc.auth, 400, "validation_error"),
        ("/keys/key_nope", None, acc.auth, 404, "not_found"),
    ]
    for path, params, headers, status, code in calls:
        response = await client.get(path, params=params, headers=headers)
        body = expect_error(response, status, code)
        assert "provider" not in body["error"]
        assert "providerCode" not in body["error"]


async def test_error_without_fix_omits_fix(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())

    async def conflict() -> None:
        raise errors.Conflict()

    app.add_api_route("/conflict", conflict)
    async with app.router.lifespan_context(app), await make_client(app) as client:
        response = await client.get("/conflict")
    body = expect_error(response, 409, "conflict")
    assert "fix" not in body["error"]
    assert "provider" not in body["error"]


async def test_unhandled_exception_is_500_without_internals(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings())

    async def boom() -> None:
        raise RuntimeError("secret-detail")

    app.add_api_route("/boom", boom)
    async with app.router.lifespan_context(app), await make_client(app) as client:
        response = await client.get("/boom")
    body = expect_error(response, 500, "internal_error")
    assert body["error"].get("fix")
    assert "secret-detail" not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"


# -- access log -------------------------------------------------------------------------


def request_lines(err: str, tracking_id: str | None = None) -> list[dict[str, Any]]:
    """The access log lines (event "request") in captured stderr, for one tracking id."""
    # Hidden frame: its argument is all of stderr, which a failure would print.
    __tracebackhide__ = True
    lines = []
    for raw in err.splitlines():
        raw = raw.strip()
        if not raw.startswith("{"):
            continue
        line = json.loads(raw)
        if line.get("event") != "request":
            continue
        if tracking_id is None or line.get("tracking_id") == tracking_id:
            lines.append(line)
    return lines


async def test_access_log_line(
    client: httpx.AsyncClient, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    acc = await create_account(runtime)
    capsys.readouterr()
    response = await client.get("/keys", params={"keyType": "secret"}, headers=acc.auth)
    assert response.status_code == 200
    out = capsys.readouterr().err
    leaked = acc.key in out
    assert not leaked, "key leaked into logs"
    tracking_id = response.headers["x-tracking-id"]
    matching = request_lines(out, tracking_id)
    count = len(matching)
    assert count == 1
    line = matching[0]
    assert line["tracking_id"] == tracking_id
    assert line["method"] == "GET"
    assert line["path"] == "/keys"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], int | float)


async def test_access_log_of_rejected_query_key(
    client: httpx.AsyncClient, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    acc = await create_account(runtime)
    capsys.readouterr()
    response = await client.get("/keys", params={"api_key": acc.key})
    expect_error(response, 400, "key_in_query")
    out = capsys.readouterr().err
    leaked = acc.key in out
    assert not leaked, "key leaked into logs"
    matching = request_lines(out, response.headers["x-tracking-id"])
    count = len(matching)
    assert count == 1
    assert matching[0]["method"] == "GET"
    assert matching[0]["path"] == "/keys"
    assert matching[0]["status"] == 400


async def test_access_log_masks_key_in_path(
    client: httpx.AsyncClient, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    acc = await create_account(runtime)
    capsys.readouterr()
    response = await client.get(f"/keys/{acc.key}", headers=acc.auth)
    assert response.status_code == 404
    out = capsys.readouterr().err
    leaked = acc.key in out
    assert not leaked, "key leaked into logs"
    matching = request_lines(out, response.headers["x-tracking-id"])
    count = len(matching)
    assert count == 1
    assert matching[0]["path"].startswith("/keys/")
    assert matching[0]["status"] == 404


async def test_access_log_masks_an_imported_key_in_path(
    client: httpx.AsyncClient, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    # An imported key has no shape of ours: any 20+ character segment that is not an id.
    acc = await create_account(runtime)
    legacy = "legacy_" + secrets.token_urlsafe(32)
    capsys.readouterr()
    for path in [f"/keys/{legacy}", f"/keys/{legacy}/revoke", f"/nowhere/{legacy}"]:
        await client.get(path, headers=acc.auth)
    out = capsys.readouterr().err
    leaked = legacy in out
    assert not leaked, "imported key leaked into logs"
    lines = [line for line in out.splitlines() if '"event":"request"' in line]
    count = sum("[redacted]" in line for line in lines)
    assert count == 3
    # Ids and words are kept.
    await client.get(f"/keys/{acc.key_id}/roll", headers=acc.auth)
    out = capsys.readouterr().err
    kept = f"/keys/{acc.key_id}/roll" in out
    assert kept


async def test_error_bodies_never_echo_the_key(client: httpx.AsyncClient, runtime: Runtime) -> None:
    # errors.py: "Messages never contain a key" (a key pasted into a path, here).
    acc = await create_account(runtime)
    for method, path in [("GET", f"/keys/{acc.key}"), ("POST", f"/keys/{acc.key}/revoke")]:
        response = await client.request(method, path, headers=acc.auth)
        expect_error(response, 404, "not_found")
        leaked = acc.key in response.text
        assert not leaked, f"key echoed in the error body of {method} /keys/<key>"


async def test_unhandled_exception_is_logged_with_tracking_id(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(make_settings())

    async def boom(request: Request) -> None:
        # The text comes from the request, as an exception's text often does.
        raise RuntimeError(request.headers["x-probe"])

    app.add_api_route("/boom", boom)
    async with app.router.lifespan_context(app), await make_client(app) as client:
        capsys.readouterr()
        response = await client.get("/boom", headers={"x-probe": "secret-detail"})
    expect_error(response, 500, "internal_error")
    err = capsys.readouterr().err
    matching = request_lines(err, response.headers["x-tracking-id"])
    count = len(matching)
    assert count == 1
    assert matching[0]["status"] == 500
    assert matching[0]["path"] == "/boom"
    # The error line names the exception type and carries the tracking id, but
    # not the exception's text, which can hold request data.
    error_lines = [
        json.loads(line)
        for line in err.splitlines()
        if line.startswith("{") and '"unhandled_exception"' in line
    ]
    assert [e["error_type"] for e in error_lines] == ["RuntimeError"]
    assert error_lines[0]["tracking_id"] == response.headers["x-tracking-id"]
    assert "secret-detail" not in err


# -- OpenAPI ------------------------------------------------------------------------------


@pytest.fixture
async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


async def test_openapi_has_the_seed_schemas(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    for name in ["ApiKey", "ListKeysResponse", "ErrorResponse", "ErrorDetail"]:
        assert name in schemas


async def test_openapi_documents_errors_of_get_keys(openapi: dict[str, Any]) -> None:
    responses = openapi["paths"]["/keys"]["get"]["responses"]
    for status in ERROR_STATUSES:
        assert status in responses
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}
    ok = responses["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/ListKeysResponse"}


async def test_openapi_has_no_422(openapi: dict[str, Any]) -> None:
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict):
                assert "422" not in operation.get("responses", {}), f"{method} {path}"
    schemas = openapi["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    assert "HTTPValidationError" not in json.dumps(openapi)


async def test_openapi_api_key_schema_matches_seed(openapi: dict[str, Any]) -> None:
    api_key = openapi["components"]["schemas"]["ApiKey"]
    assert set(api_key["required"]) == {
        "id",
        "key",
        "keyType",
        "accountId",
        "name",
        "revoked",
        "createdAt",
    }
    props = api_key["properties"]
    for name in ["environmentId", "lastUsedAt"]:
        assert props[name].get("type") == "string", name
        assert "anyOf" not in props[name]
        assert "default" not in props[name]
        assert "null" not in json.dumps(props[name])
    assert sorted(props["keyType"]["enum"]) == ["public", "secret"]
    assert props["revoked"]["type"] == "boolean"


async def test_openapi_error_detail_matches_seed(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert set(schemas["ErrorResponse"]["required"]) == {"trackingId", "error"}
    detail = schemas["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message"}
    for name in ["fix", "provider", "providerCode"]:
        assert detail["properties"][name].get("type") == "string", name


# -- meta ---------------------------------------------------------------------------------


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "pid": os.getpid()}


async def test_readyz(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "limits": "memory"}


async def test_healthz_ignores_authorization(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers=bearer("garbage"))
    assert response.status_code == 200
