"""Which request paths the gateway passes on (gateway/app.py, ``_bad_path``).

A dot segment, however it is spelled, would let the upstream resolve the
path past the gateway's ``--upstream`` prefix: nginx as the upstream decodes
``%2F`` and then resolves ``..`` (reviewer r14 reached ``/admin`` through
``--upstream http://host/v1`` with ``/a%2F..%2F..%2Fadmin``).
"""

from __future__ import annotations

import pytest

from keyhouse import errors
from keyhouse.gateway.app import _bad_path

REFUSED = [
    # reviewer r14's: encoded slashes around dot segments
    b"/a%2F..%2F..%2Fadmin",
    b"/..%2Fadmin",
    b"/a%2f.%2e%2fadmin",
    # encoded dots, either case, alone or mixed with literal ones
    b"/a/%2e%2e/admin",
    b"/a/%2E%2E/admin",
    b"/a/.%2E/admin",
    b"/a/%2e./admin",
    b"/a/%2e",
    b"/a/%2F%2E%2E",
    # encoded twice or three times (a server behind a server decodes again)
    b"/a/%252e%252e/admin",
    b"/a%252F..%252Fadmin",
    b"/a/%25252E%25252E/admin",
    # backslashes, literal or encoded (Windows servers, Tomcat's ALLOW_BACKSLASH)
    b"/a\\..\\admin",
    b"/a%5C..%5Cadmin",
    b"/a%5c%2e%2e%5cadmin",
    b"/a/..\\admin",
    # path parameters after the dots (Tomcat and Spring cut them, then resolve)
    b"/a/..;/admin",
    b"/a/%2e%2e;x=1/admin",
    # still encoded after four decodings: no client's path
    b"/a/%2525252e%2525252e/admin",
    # literal dot segments, as a raw socket can send them
    b"/a/../b",
    b"/./b",
    b"/a/..",
]

PASSED = [
    b"/",
    b"/items",
    b"/a%2Fb/c%20d/%E2%9C%93;v=1",
    b"/files/100%25",
    b"/files/100%2525",
    b"/.well-known/openid-configuration",
    b"/a/.../b",
    b"/a/..b/c.",
    b"/a/%2e%2ex",
    b"/v1.2/items",
]


@pytest.mark.parametrize("path", REFUSED, ids=lambda p: p.decode())
def test_dot_segments_however_spelled_are_refused(path: bytes) -> None:
    refusal = _bad_path(path)
    assert isinstance(refusal, errors.BadRequest)
    assert refusal.code == errors.ErrorCode.VALIDATION_ERROR
    assert refusal.fix


@pytest.mark.parametrize("path", PASSED, ids=lambda p: p.decode())
def test_paths_without_dot_segments_pass(path: bytes) -> None:
    assert _bad_path(path) is None


def test_a_target_that_is_not_a_path_is_refused() -> None:
    refusal = _bad_path(b"http://elsewhere/x")
    assert isinstance(refusal, errors.BadRequest)
    assert refusal.fix
