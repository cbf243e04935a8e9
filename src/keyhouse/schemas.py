"""Shared schema pieces: the seed's error envelope, request bodies, names and timestamps.

Request bodies are strict: each member has the JSON type the API reference
gives it (no ``"60"`` or ``true`` for an integer, no number for a date), the
same whether pydantic reads the JSON text (``read_body``) or the objects
FastAPI decoded from it.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "NAME_MAX_LENGTH",
    "ErrorDetail",
    "ErrorResponse",
    "Name",
    "NotNull",
    "Schema",
    "Timestamp",
    "normalize_name",
    "omittable",
    "parse_timestamp",
]


class Schema(BaseModel):
    """A request body: unknown members refused, every member its documented JSON type."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _no_null(schema: dict[str, Any]) -> None:
    """Show an optional member as its plain type: omitted when absent, never null."""
    any_of = schema.pop("anyOf", None)
    if any_of:
        kept = [s for s in any_of if s.get("type") != "null"]
        if len(kept) == 1:
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    schema.pop("default", None)


def omittable(description: str, **kwargs: Any) -> Any:
    """An optional member that is left out of the JSON when it has no value."""
    return Field(default=None, description=description, json_schema_extra=_no_null, **kwargs)


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("leave the member out instead of sending null")
    return value


# On an omittable request member: it may be left out, but not sent as null, since
# the OpenAPI shows it as its plain type. (A default is not validated: left out passes.)
NotNull = AfterValidator(_not_null)


# -- names --------------------------------------------------------------------------------
#
# One rule for the names of keys, environments and accounts, applied wherever a
# name comes in (request bodies and the CLI), so that what is stored, shown and
# compared for uniqueness is one canonical string:
#
# 1. Refused anywhere: control characters and line breaks (log and terminal
#    injection), surrogates, and the bidirectional embeddings, overrides and
#    isolates of the "Trojan Source" attack (https://trojansource.codes), which
#    make a name display as something else.
# 2. Normalized to NFC (https://unicode.org/reports/tr15/): "café" typed as
#    one code point or as "e" + U+0301 is one name, not two that look alike.
# 3. Leading and trailing blanks are removed: whitespace, format characters
#    (Unicode category Cf) and Default_Ignorable_Code_Point characters
#    (DerivedCoreProperties.txt: U+200B zero width space, U+FEFF, the hangul
#    fillers U+115F/U+1160/U+3164/U+FFA0, ...), plus U+2800 braille pattern
#    blank. So "prod\u200b" is the name "prod", and collides with it.
# 4. Inside a name, those invisible characters are refused (a name that looks
#    like "prod" but is not), except where they are part of what is written:
#    a zero width joiner or non-joiner between two non-ASCII characters (emoji
#    sequences, Persian, Indic scripts), a variation selector after a non-ASCII
#    character or in a keycap sequence ("1" U+FE0F U+20E3), and the tag
#    characters of an emoji tag sequence (the flags of England, Scotland, Wales).
# 5. What is left must hold a visible character (a letter, digit, punctuation
#    or symbol) and fit the columns: at most 100 characters (String(100) in
#    models.py; NFC can lengthen a string, so this is checked after it).
#
# Other Unicode is fine: non-breaking spaces inside a name, emoji, any script.

NAME_MAX_LENGTH = 100

# Default_Ignorable_Code_Point, from Unicode 15.1's DerivedCoreProperties.txt
# (https://www.unicode.org/Public/15.1.0/ucd/DerivedCoreProperties.txt).
_DEFAULT_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_DEFAULT_IGNORABLE = frozenset(
    chr(code) for low, high in _DEFAULT_IGNORABLE_RANGES for code in range(low, high + 1)
)
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_BRAILLE_BLANK = "\u2800"
_JOINERS = frozenset("\u200c\u200d")
_VARIATION_SELECTORS = frozenset(
    [chr(c) for c in range(0xFE00, 0xFE10)]
    + [chr(c) for c in range(0xE0100, 0xE01F0)]
    + ["\u180b", "\u180c", "\u180d", "\u180f"]
)
_KEYCAP_BASES = frozenset("0123456789#*")
_KEYCAP = "\u20e3"  # COMBINING ENCLOSING KEYCAP: "1" U+FE0F U+20E3 is the emoji 1️⃣
# U+1F3F4 WAVING BLACK FLAG, tag characters, CANCEL TAG (UTS #51, ED-14a).
_EMOJI_TAG_SEQUENCE = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")


def _invisible(char: str) -> bool:
    return char in _DEFAULT_IGNORABLE or unicodedata.category(char) == "Cf"


def _blank(char: str) -> bool:
    return char.isspace() or char == _BRAILLE_BLANK or _invisible(char)


def _code(char: str) -> str:
    return f"U+{ord(char):04X}"


def _allowed_inside(name: str, index: int, in_tag_sequence: set[int]) -> bool:
    """Whether the invisible character at ``index`` is part of what is written there."""
    char = name[index]
    before = name[index - 1] if index > 0 else " "
    if char in _JOINERS:
        after = name[index + 1] if index + 1 < len(name) else " "
        return not any(c.isascii() or c.isspace() or c in _JOINERS for c in (before, after))
    if char in _VARIATION_SELECTORS:
        if before in _KEYCAP_BASES:
            return name[index + 1 : index + 2] == _KEYCAP
        return not (before.isascii() or _blank(before))
    return index in in_tag_sequence


# What a name may be before normalizing: NFC and trimming shorten it.
NAME_RAW_MAX_LENGTH = 4 * NAME_MAX_LENGTH


def normalize_name(value: str) -> str:
    """The canonical form of a name (see the rule above), or a pydantic error saying why not."""
    for char in value:
        if char in _BIDI_CONTROLS:
            raise PydanticCustomError(
                "name_bidi_control",
                "must not contain bidirectional control characters ({code})",
                {"code": _code(char)},
            )
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise PydanticCustomError(
                "name_control_character",
                "must not contain control characters or line breaks ({code})",
                {"code": _code(char)},
            )
    name = unicodedata.normalize("NFC", value)
    # A blank at the start is never part of what is written (a joiner or a
    # selector needs a character before it), so it goes; at the end, a
    # variation selector or an emoji tag sequence stays ("❤️", a flag).
    start = 0
    while start < len(name) and _blank(name[start]):
        start += 1
    name = name[start:]
    in_tag_sequence = {
        index
        for match in _EMOJI_TAG_SEQUENCE.finditer(name)
        for index in range(match.start() + 1, match.end())
    }
    end = len(name)
    while end > 0 and _blank(name[end - 1]) and not _allowed_inside(name, end - 1, in_tag_sequence):
        end -= 1
    name = name[:end]
    for index, char in enumerate(name):
        if _invisible(char) and not _allowed_inside(name, index, in_tag_sequence):
            raise PydanticCustomError(
                "name_invisible_character",
                "must not contain invisible characters ({code})",
                {"code": _code(char)},
            )
    if not any(unicodedata.category(char)[0] in "LNPS" and not _blank(char) for char in name):
        raise PydanticCustomError(
            "name_blank", "must contain a visible character (a letter, digit or symbol)"
        )
    if len(name) > NAME_MAX_LENGTH:
        raise PydanticCustomError(
            "name_too_long",
            "must be at most {max} characters after Unicode NFC normalization",
            {"max": NAME_MAX_LENGTH},
        )
    return name


Name = Annotated[
    str,
    Strict(),
    # The limit holds after normalizing (normalize_name): "e" + U+0301 a
    # hundred times is 100 characters in NFC, and a trailing U+200B goes. The
    # raw text may be longer, within a bound that keeps the work small.
    StringConstraints(min_length=1, max_length=NAME_RAW_MAX_LENGTH),
    AfterValidator(normalize_name),
    Field(
        description=(
            "1-100 characters with at least one visible one. Stored normalized: Unicode "
            "NFC, without leading or trailing whitespace or invisible characters. Control "
            "characters, line breaks, bidirectional controls and invisible characters "
            "inside the name are refused."
        ),
        examples=["Production backend"],
    ),
]


# -- timestamps in ------------------------------------------------------------------------

# RFC 3339's date-time (https://www.rfc-editor.org/rfc/rfc3339#section-5.6), the
# profile of ISO 8601 that OpenAPI's "format: date-time" names: seconds and a zone
# required. pydantic's own parser also takes a number, or a string of digits, as
# Unix time ("1999999999" was a date in 2033): a client bug, not a date.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?P<zone>[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
_EXAMPLE = "2027-01-31T12:00:00Z"


def parse_timestamp(value: Any) -> datetime:
    """An RFC 3339 date-time with a zone, as an aware datetime in UTC.

    Every such string converts: one whose UTC time falls outside what Python
    holds (``9999-12-31T23:30:00-01:00`` is year 10000 in UTC, and raised
    ``OverflowError`` in the conversion, a 500) is refused here, with the
    range in the message. The database holds that whole range (PostgreSQL's
    timestamp reaches year 294276; SQLite stores text).
    """
    if isinstance(value, datetime):  # from Python callers: the CLI, tests
        parsed = value
    elif not isinstance(value, str):
        raise PydanticCustomError(
            "datetime_type",
            "must be a string: an ISO 8601 date-time with a time zone, like {example}",
            {"example": _EXAMPLE},
        )
    else:
        match = _RFC3339.fullmatch(value)
        if match is None:
            raise PydanticCustomError(
                "datetime_format",
                "must be an ISO 8601 date-time with a time zone (RFC 3339), like {example}",
                {"example": _EXAMPLE},
            )
        zone = match["zone"]
        if zone is None:
            raise PydanticCustomError(
                "timezone_aware",
                "must have a time zone: end it with Z (UTC) or an offset like +02:00",
            )
        if len(zone) == 6 and (int(zone[1:3]) > 23 or int(zone[4:6]) > 59):
            raise PydanticCustomError(
                "datetime_parsing", "is not a valid date-time: the offset is -23:59 to +23:59"
            )
        try:
            parsed = datetime.fromisoformat(value.upper())
        except ValueError as exc:  # e.g. month 13, or 2027-02-30
            raise PydanticCustomError(
                "datetime_parsing", "is not a valid date-time: {reason}", {"reason": str(exc)}
            ) from None
    if parsed.utcoffset() is None:
        raise PydanticCustomError(
            "timezone_aware", "must have a time zone: end it with Z (UTC) or an offset"
        )
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_range",
            "is out of range: in UTC it must lie between 0001-01-01T00:00:00Z and "
            "9999-12-31T23:59:59.999999Z",
        ) from None


# A timestamp in a request body: a JSON string, RFC 3339 with a zone, in UTC once read.
Timestamp = Annotated[AwareDatetime, BeforeValidator(parse_timestamp)]


# -- the error envelope -------------------------------------------------------------------


class ErrorDetail(BaseModel):
    """Structured error details for API error responses."""

    model_config = ConfigDict(title="ErrorDetail")

    code: str = Field(description="Machine-readable error code.")
    message: str = Field(description="Human-readable error message.")
    fix: str | None = omittable("Actionable hint for fixing the error.")
    provider: str | None = omittable("Provider that caused the error (e.g. telnyx, ses).")
    providerCode: str | None = omittable("Provider-specific error code.")


class ErrorResponse(BaseModel):
    """Standard error response for API errors."""

    model_config = ConfigDict(title="ErrorResponse")

    trackingId: str = Field(description="Unique tracking ID for the request.")
    error: ErrorDetail = Field(description="Structured error details for API error responses.")
