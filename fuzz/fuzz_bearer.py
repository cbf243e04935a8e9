"""Fuzz the request guards: ``http.pipeline.bearer_token`` and the middleware's checks.

Requests are built from a scope with arbitrary header and query bytes, as a
server would hand them over. ``bearer_token`` may only return a token or
raise keyhouse's 401s; the middleware's header, query and path checks may only
answer or pass.

Run: ``python fuzz/fuzz_bearer.py -max_total_time=60`` (libFuzzer flags).
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]

# Only the code under test: instrumenting all 600 modules the app imports
# takes 40 s.
with atheris.instrument_imports(
    include=[
        "keyhouse.http.middleware",
        "keyhouse.http.pipeline",
        "keyhouse.keys.format",
        "starlette.datastructures",
    ]
):
    from starlette.requests import Request

    from keyhouse import errors
    from keyhouse.http.middleware import MAX_HEADER_LINE, SINGLE_HEADERS, RequestMiddleware
    from keyhouse.http.pipeline import bearer_token
    from keyhouse.keys.format import KeyFormat, Kind

FORMAT = KeyFormat("sk_", "pk_")


async def _app(scope: object, receive: object, send: object) -> None:  # never called
    raise AssertionError


MIDDLEWARE = RequestMiddleware(_app, max_body=64 * 1024, key_format=FORMAT)
NAMES = [b"authorization", b"content-type", b"content-length", b"x-other", b"Authorization"]


def _scope(headers: list[tuple[bytes, bytes]], query: bytes, path: str) -> dict[str, object]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query,
        "headers": headers,
        "client": ("127.0.0.1", 1),
    }


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    headers = []
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        name = NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)]
        if fdp.ConsumeBool():
            value = b"Bearer " + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1100))
        else:
            value = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1100))
        headers.append((name, value))
    query = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
    path = "/" + fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 120))
    scope = _scope(headers, query, path)

    token: str | None
    try:
        token = bearer_token(Request(scope))
    except errors.Unauthorized:  # 401 missing_api_key or invalid_api_key: an answer
        token = None
    if token is not None:
        assert token
        assert token == token.strip()
        assert len(token) <= 1024

    guard = MIDDLEWARE._check_headers(scope)
    assert guard is None or guard.status_code == 400
    longest = max((len(n) + len(v) for n, v in headers), default=0)
    singles = [n for n, _ in headers if n in SINGLE_HEADERS]
    repeated = len(singles) != len(set(singles))
    # 4 short lines: under the total.
    assert (guard is not None) == (longest > MAX_HEADER_LINE or repeated)

    guard = MIDDLEWARE._check_query(scope)
    assert guard is None or isinstance(guard, errors.KeyInQuery)

    safe = MIDDLEWARE._safe_path(path)
    assert all(FORMAT.parse(part).kind is Kind.FOREIGN for part in safe.split("/"))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
