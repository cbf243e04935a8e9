"""Keys in the query string: found however they are wrapped, and never used or echoed.

A URL ends up in proxy and server logs, browser history and ``Referer``
headers, so a key in one has leaked: ``RequestMiddleware`` refuses the
request with 400 ``key_in_query`` (a fixed message: the key is not repeated)
before anything reads it. What counts as a key, in any parameter's name or
value:

* a run of 20 or more characters of ``A-Z a-z 0-9 - . _ ~`` (the characters
  an imported key is made of, keyhouse's own keys included: they are such a
  run of 52 or more), of 6 or more distinct characters, that is not a
  keyhouse id (``env_…``, ``evt_…``);
* a credential's parameter name (``api_key``, ``token``, ``authorization``,
  … in any case, with or without ``-``, ``_``, ``.``), whatever its value;

looked for in the text as sent and again after each unwrapping, up to
``MAX_ROUNDS`` times: percent-decoding (once by the query parser, then as
often as the text was encoded again), ``\\uXXXX`` and ``%uXXXX`` escapes (a
key inside JSON), and base64 (``Basic base64(user:key)``). A scheme
(``Bearer``, ``Basic``), a space or ``+``, JSON punctuation or a comma
around a key ends the run, not the key.

Why a shape and not a lookup: imported keys have no format of ours, so the
only exact test is a SHA-256 lookup of every candidate token. On a cache
miss that is a database round trip (~340 us of CPU on PostgreSQL, make
bench), per token, per request, for anyone who sends a query string: a
cheap way to make keyhouse work, and it would slow every paged listing
(``startingAfter``, ``environmentId`` are 30-character ids). The shape costs
microseconds, needs no I/O, and gives the same answer in every process.
keyhouse's own query parameters never take such a run other than its ids
(they take ids, enums, booleans and numbers), so a request it refuses by
mistake carried something keyhouse does not read anyway.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote, unquote_plus

from keyhouse.ids import ID_RE
from keyhouse.keys.format import IMPORTED_KEY_MIN_LENGTH

__all__ = ["CREDENTIAL_NAMES", "MAX_ROUNDS", "MIN_DISTINCT", "holds_key"]

# Parameter names that carry credentials, lowercased and without - _ . :
# ?api_key=, ?apiKey=, ?X-Api-Key=, ?access_token= (RFC 6750 section 2.3).
CREDENTIAL_NAMES = frozenset(
    {
        "key",
        "apikey",
        "xapikey",
        "token",
        "accesstoken",
        "apitoken",
        "authtoken",
        "authorization",
        "auth",
        "bearer",
        "secret",
        "secretkey",
        "clientsecret",
    }
)
# A key is random: 20 characters drawn from 66 hold fewer than 6 distinct
# ones with odds of ~3e-16 (16 hex digits: ~3e-7). A run of one or a few
# repeated characters ("eeee...", "----...") is filler, not a key.
MIN_DISTINCT = 6
# Unwrapping rounds: a text still changing after this many was wrapped more
# often than any client does by mistake, and is refused.
MAX_ROUNDS = 6
# What a run of 20 can be unwrapped from: its characters, %XX and \\uXXXX
# escapes, and base64 (+ and /).
_CANDIDATE = re.compile(r"[A-Za-z0-9._~%\\+/-]{20,}")
_TOKEN = re.compile(rf"[A-Za-z0-9._~-]{{{IMPORTED_KEY_MIN_LENGTH},}}")
# base64 (standard or URL-safe) of 20 bytes or more: 27 characters or more.
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{27,}={0,2}")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
# JSON's string escapes (\uXXXX, \\, \", \/) and IIS's %uXXXX.
_ESCAPE = re.compile(r"[\\%][uU]([0-9A-Fa-f]{4})|\\([\\\"/])")


def holds_key(query_string: str) -> bool:
    """Whether the (raw) query string holds a key, or a credential's parameter name."""
    for part in query_string.split("&"):
        name = part.partition("=")[0]
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if name.lower().replace("-", "").replace("_", "").replace(".", "") in CREDENTIAL_NAMES:
            return True
    # Only a stretch of the characters a run can be unwrapped from can hold
    # one, and unwrapping never joins two stretches: what separates them
    # ("&", "=", a space, a quote, ":") stays. Most stretches are ids.
    # The string as sent, not parameter by parameter: a query parser turns
    # "+" into a space, and base64 (Basic) holds "+".
    for match in _CANDIDATE.finditer(query_string):
        stretch = match.group()
        if ID_RE.fullmatch(stretch) is None and _holds_token(stretch):
            return True
    return False


def _has_run(text: str) -> bool:
    for match in _TOKEN.finditer(text):
        run = match.group()
        if len(set(run)) >= MIN_DISTINCT and ID_RE.fullmatch(run) is None:
            return True
    return False


def _holds_token(text: str, base64_depth: int = 2) -> bool:
    """A key-shaped run in ``text``, or in what unwrapping it gives."""
    for _ in range(MAX_ROUNDS):
        if _has_run(text):
            return True
        if base64_depth and _holds_token_in_base64(text, base64_depth - 1):
            return True
        unwrapped = unquote(text) if "%" in text else text
        if "\\" in unwrapped or "%" in unwrapped:
            unwrapped = _ESCAPE.sub(_unescape, unwrapped)
        if unwrapped == text:
            return False
        text = unwrapped
    return True


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    return chr(int(code, 16)) if code is not None else match.group(2)


def _holds_token_in_base64(text: str, depth: int) -> bool:
    for match in _BASE64.finditer(text):
        run = match.group().rstrip("=")
        if ID_RE.fullmatch(run) is not None:
            continue
        # The run may start before the base64 ("Basic+dXNl..."): each of the
        # four alignments is decoded, one of them is the right one.
        for start in range(4):
            standard = run[start:].translate(_URLSAFE_TO_STANDARD)
            extra = len(standard) % 4
            # A last group of 2 or 3 characters is 1 or 2 bytes (padding left
            # out, or cut off above); 1 character alone is no byte.
            standard = standard[:-1] if extra == 1 else standard + "=" * (-extra % 4)
            try:
                decoded = base64.b64decode(standard, validate=True)
            except (binascii.Error, ValueError):
                continue
            if _holds_token(decoded.decode("latin-1"), depth):
                return True
    return False
