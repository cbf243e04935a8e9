"""The one JSON response of keyhouse: rendered by pydantic-core's serializer.

Starlette's ``JSONResponse`` renders with ``json.dumps``: 275 us for a
listing of 200 keys, against 95 us for ``pydantic_core.to_json`` with the
same bytes out (timeit, 2,000 renders of the bench's 200-key listing).
Both write compact JSON with non-ASCII characters as UTF-8; keyhouse's
bodies hold strings, integers, booleans and nulls only, for which the two
agree byte for byte (``tests/test_responses.py``).
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json
from starlette.responses import JSONResponse as _StarletteJSONResponse

__all__ = ["JSONResponse", "render_json"]


def render_json(content: Any) -> bytes:
    """``content`` as compact UTF-8 JSON, as every keyhouse response body."""
    return to_json(content)


class JSONResponse(_StarletteJSONResponse):
    def render(self, content: Any) -> bytes:
        return render_json(content)
