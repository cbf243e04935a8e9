"""Every body is rendered by ``keyhouse.responses``: the bytes json.dumps would write."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from keyhouse.responses import JSONResponse, render_json

# What keyhouse's bodies are made of: strings (any Unicode a name may hold and
# more), integers, booleans and nulls, in objects and lists.
_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
_bodies = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


def starlette_render(content: Any) -> bytes:
    """As Starlette's JSONResponse renders (its ``render``)."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


@given(_bodies.filter(lambda b: _encodable(b)))
def test_the_same_bytes_as_starlettes_json_response(body: Any) -> None:
    assert render_json(body) == starlette_render(body)


def _encodable(body: Any) -> bool:
    try:
        starlette_render(body)
    except UnicodeEncodeError:  # lone surrogates: keyhouse refuses them on the way in
        return False
    return True


def test_the_response_class_renders_with_it() -> None:
    resp = JSONResponse({"name": "Zoë ☃", "n": 1, "ok": True, "none": None})
    assert resp.body == '{"name":"Zoë ☃","n":1,"ok":true,"none":null}'.encode()
    assert resp.headers["content-type"] == "application/json"
