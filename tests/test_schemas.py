"""Names: what people may call keys, environments and accounts."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from keyhouse.schemas import Name

NAME = TypeAdapter(Name)


@pytest.mark.parametrize(
    "value",
    ["Production backend", "héllo wörld", "0\xa0nbsp", "family 👩\u200d👩\u200d👧", "x" * 100],
)
def test_accepted_names_round_trip(value: str) -> None:
    assert NAME.validate_python(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "x" * 101,
        "tab\there",
        "line\nbreak",
        "nul\x00",
        "esc\x1b[31m",
        "para\u2029sep",
        "evil\u202eoverride",  # Trojan Source: displays reversed
    ],
)
def test_refused_names(value: str) -> None:
    with pytest.raises(ValidationError):
        NAME.validate_python(value)
