"""Request input: names (keys, environments, accounts), timestamps, strict JSON types."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from keyhouse.accounts.schemas import CreateAccountRequest, UpdateAccountRequest
from keyhouse.config import PLAN_LIMIT_MAX
from keyhouse.environments.schemas import CreateEnvironmentRequest
from keyhouse.keys.schemas import (
    CreateKeyRequest,
    ImportKeyRequest,
    RenameKeyRequest,
    RollKeyRequest,
    VerifyRequest,
)
from keyhouse.schemas import NAME_MAX_LENGTH, Name, Timestamp

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


# -- names: one canonical form -------------------------------------------------------------

CAFE_NFC = "caf\u00e9"
CAFE_NFD = "cafe\u0301"
ENGLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (CAFE_NFD, CAFE_NFC),  # NFC: one name, however it was typed
        ("prod\u200b", "prod"),  # invisible characters at either end go
        ("\ufeffprod", "prod"),
        ("  prod \u00a0", "prod"),  # and whitespace
        ("\u2800prod\u3164", "prod"),  # braille blank, hangul filler
        ("prod\u200d", "prod"),  # a joiner joins nothing at the end
        ("love \u2764\ufe0f", "love \u2764\ufe0f"),  # an emoji's selector stays
        (f"team {ENGLAND}", f"team {ENGLAND}"),  # and a flag's tag sequence
        ("\u2764\ufe0f\u200d\U0001f525", "\u2764\ufe0f\u200d\U0001f525"),  # heart on fire
        ("key 1\ufe0f\u20e3", "key 1\ufe0f\u20e3"),  # keycap
        ("\u0633\u0644\u0627\u0645\u200c\u062f\u0646\u06cc\u0627", None),  # Persian ZWNJ
        ("\u0938\u0924\u094d\u200d\u092f", None),  # Devanagari ZWJ after a virama
    ],
)
def test_names_are_stored_normalized(given: str, stored: str | None) -> None:
    assert NAME.validate_python(given) == (given if stored is None else stored)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("\u200b\u200b", "name_blank"),
        ("\ufeff", "name_blank"),
        ("\u3164", "name_blank"),  # hangul filler: a letter that shows nothing
        ("\u115f\u1160", "name_blank"),
        ("\u2800", "name_blank"),
        ("\u00a0\u3000", "name_blank"),
        ("\u0301", "name_blank"),  # a lone combining mark
        ("pr\u200bod", "name_invisible_character"),
        ("pr\u200dod", "name_invisible_character"),  # a joiner between ASCII letters
        ("pr\ufe0fod", "name_invisible_character"),
        ("x\u00adz", "name_invisible_character"),  # soft hyphen
        ("x\u2060z", "name_invisible_character"),  # word joiner
        ("x\u200ez", "name_invisible_character"),  # left-to-right mark
        ("x\U000e0041z", "name_invisible_character"),  # a tag outside an emoji: "ASCII smuggling"
        ("x\u2066z", "name_bidi_control"),
        ("x\u0085z", "name_control_character"),
        ("\u0958" * 51, "name_too_long"),  # NFC doubles it: 102 characters
    ],
)
def test_blank_looking_and_invisible_names_are_refused(value: str, kind: str) -> None:
    with pytest.raises(ValidationError) as caught:
        NAME.validate_python(value)
    assert caught.value.errors()[0]["type"] == kind


def test_nfc_lengthening_is_checked_after_normalization() -> None:
    # U+0958 is a composition exclusion: NFC makes it two code points.
    name = NAME.validate_python("\u0958" * 50)
    assert len(name) == 100


@pytest.mark.parametrize("value", [5, True, None, ["x"], {"x": 1}, b"bytes"])
def test_a_name_is_a_json_string(value: object) -> None:
    with pytest.raises(ValidationError):
        NAME.validate_python(value)
    with pytest.raises(ValidationError):
        NAME.validate_json(json.dumps(value if not isinstance(value, bytes) else 1))


def _is_blank(char: str) -> bool:
    category = unicodedata.category(char)
    return char.isspace() or category in {"Cf", "Mn", "Me"} or char in "\u2800\u3164\u115f\u1160"


@given(st.text(max_size=NAME_MAX_LENGTH))
def test_names_are_canonical(value: str) -> None:
    """Whatever comes in: a ValidationError, or a name that is its own canonical form."""
    try:
        name = NAME.validate_python(value)
    except ValidationError:
        return
    assert 1 <= len(name) <= NAME_MAX_LENGTH
    assert unicodedata.is_normalized("NFC", name)
    assert NAME.validate_python(name) == name  # idempotent: stored names compare as given
    assert not name[0].isspace()
    assert not name[-1].isspace()
    assert not all(_is_blank(char) for char in name)
    assert not any(unicodedata.category(c) in {"Cc", "Cs", "Zl", "Zp"} for c in name)


@given(st.text(alphabet=st.characters(categories=["Cf", "Zs", "Cc", "Zl", "Zp", "Mn"])))
def test_names_of_blanks_alone_are_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        NAME.validate_python(value)


@given(
    st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=20),
    st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\ufe0f"]),
    st.data(),
)
def test_an_invisible_character_never_makes_a_second_ascii_name(
    base: str, invisible: str, data: st.DataObject
) -> None:
    """A name like "prod" with an invisible character anywhere: "prod", or refused."""
    at = data.draw(st.integers(min_value=0, max_value=len(base)))
    try:
        name = NAME.validate_python(base[:at] + invisible + base[at:])
    except ValidationError:
        return
    assert name == base


# -- timestamps in ---------------------------------------------------------------------------

TIMESTAMP = TypeAdapter(Timestamp)


@pytest.mark.parametrize(
    ("given", "utc"),
    [
        ("2099-01-01T00:00:00Z", datetime(2099, 1, 1, tzinfo=UTC)),
        ("2099-01-01T02:00:00+02:00", datetime(2099, 1, 1, tzinfo=UTC)),
        ("2099-01-01 00:00:00z", datetime(2099, 1, 1, tzinfo=UTC)),
        ("2099-01-01t00:00:00.1234567Z", datetime(2099, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
        ("9999-12-31T23:59:59.999999Z", datetime.max.replace(tzinfo=UTC)),
        ("9999-12-31T23:59:59.999999-00:00", datetime.max.replace(tzinfo=UTC)),
    ],
)
def test_timestamps_are_read_into_utc(given: str, utc: datetime) -> None:
    for parsed in (TIMESTAMP.validate_python(given), TIMESTAMP.validate_json(json.dumps(given))):
        assert parsed == utc
        assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("9999-12-31T23:30:00-01:00", "datetime_range"),  # year 10000 in UTC: was a 500
        ("0001-01-01T00:30:00+01:00", "datetime_range"),  # year 0 in UTC
        (1999999999, "datetime_type"),  # Unix time: pydantic took it as a date
        (1999999999.5, "datetime_type"),
        (True, "datetime_type"),
        (["2099-01-01T00:00:00Z"], "datetime_type"),
        ("1999999999", "datetime_format"),  # so did a string of digits
        ("2099-01-01", "datetime_format"),
        ("2099-01-01T00:00Z", "datetime_format"),  # RFC 3339 needs the seconds
        ("+12099-01-01T00:00:00Z", "datetime_format"),
        ("2099-01-01T00:00:00", "timezone_aware"),
        ("2099-01-01T00:00:00+24:00", "datetime_parsing"),
        ("2099-13-01T00:00:00Z", "datetime_parsing"),
        ("2099-02-29T00:00:00Z", "datetime_parsing"),
        ("tomorrow", "datetime_format"),
    ],
)
def test_bad_timestamps_are_refused(value: object, kind: str) -> None:
    with pytest.raises(ValidationError) as from_python:
        TIMESTAMP.validate_python(value)
    assert from_python.value.errors()[0]["type"] == kind
    with pytest.raises(ValidationError) as from_json:
        TIMESTAMP.validate_json(json.dumps(value))
    assert from_json.value.errors()[0]["type"] == kind


@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
)
def test_every_rfc3339_string_is_a_utc_time_or_a_validation_error(
    local: datetime, offset_minutes: int
) -> None:
    """Near the ends of the range too: never an OverflowError (a 500)."""
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    text = f"{local.isoformat(timespec='microseconds')}{sign}{hours:02d}:{minutes:02d}"
    zone = timezone(timedelta(minutes=offset_minutes))
    try:
        expected: datetime | None = local.replace(tzinfo=zone).astimezone(UTC)
    except OverflowError:
        expected = None
    if expected is None:
        with pytest.raises(ValidationError, match="datetime_range"):
            TIMESTAMP.validate_json(json.dumps(text))
        return
    parsed = TIMESTAMP.validate_json(json.dumps(text))
    assert parsed == expected
    assert parsed.tzinfo is UTC


# -- request bodies: strict JSON types ------------------------------------------------------

BODIES: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (CreateKeyRequest, {"name": "n", "keyType": "secret", "expiresAt": "2099-01-01T00:00:00Z"}),
    (RenameKeyRequest, {"name": "n"}),
    (RollKeyRequest, {"expiresInSeconds": 60}),
    (ImportKeyRequest, {"key": "ext_" + "a" * 30, "name": "n", "keyType": "public"}),
    (VerifyRequest, {"key": "sk_x"}),
    (CreateEnvironmentRequest, {"name": "n"}),
    (CreateAccountRequest, {"name": "n", "limits": {"maxKeys": 1, "burst": 2}}),
    (UpdateAccountRequest, {"name": "n", "limits": {"monthlyRequests": 1, "ratePerSecond": 1}}),
]
# What a lax parser would coerce: a number as a string, a boolean or a float as
# an integer, a number as a string or a date.
WRONG_TYPES: dict[type, list[Any]] = {
    str: [5, True, 1.5, ["n"]],
    int: ["60", True, 60.0, 60.5, None],
}


def _members(body: dict[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    found: list[tuple[tuple[str, ...], Any]] = []
    for member, value in body.items():
        if isinstance(value, dict):
            found += [((member, *path), v) for path, v in _members(value)]
        else:
            found.append(((member,), value))
    return found


def _with(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = dict(body)
    if len(path) == 1:
        changed[path[0]] = value
    else:
        changed[path[0]] = _with(changed[path[0]], path[1:], value)
    return changed


@pytest.mark.parametrize(("model", "body"), BODIES, ids=lambda x: getattr(x, "__name__", ""))
def test_request_bodies_take_their_documented_json_types_only(
    model: type[BaseModel], body: dict[str, Any]
) -> None:
    """Both ways a body is read (JSON text, or what FastAPI decoded): the same verdicts."""
    model.model_validate(body)
    model.model_validate_json(json.dumps(body))
    for path, good in _members(body):
        wrong = WRONG_TYPES[str] if isinstance(good, str) else WRONG_TYPES[int]
        for value in wrong:
            if value is None and path[0] == "limits":
                continue  # null is "unlimited"
            bad = _with(body, path, value)
            with pytest.raises(ValidationError):
                model.model_validate(bad)
            with pytest.raises(ValidationError):
                model.model_validate_json(json.dumps(bad))


@pytest.mark.parametrize("limit", ["maxKeys", "monthlyRequests", "ratePerSecond", "burst"])
def test_plan_limits_stop_at_what_the_columns_hold(limit: str) -> None:
    CreateAccountRequest.model_validate({"name": "n", "limits": {limit: PLAN_LIMIT_MAX}})
    for value in (PLAN_LIMIT_MAX + 1, 2**63, 10**30):
        with pytest.raises(ValidationError):
            CreateAccountRequest.model_validate_json(
                json.dumps({"name": "n", "limits": {limit: value}})
            )


def test_the_limit_holds_after_normalization_when_it_shortens_too() -> None:
    # "e" + U+0301 is one character in NFC; a trailing U+200B is trimmed.
    # Both were refused as over 100 before normalizing (a reviewer's finding).
    assert NAME.validate_python("e\u0301" * 100) == "\u00e9" * 100
    assert NAME.validate_python("x" * 100 + "\u200b") == "x" * 100
    with pytest.raises(ValidationError) as caught:
        NAME.validate_python("e\u0301" * 101)
    assert caught.value.errors()[0]["type"] == "name_too_long"
