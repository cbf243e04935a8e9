"""The operator's admin tokens: from ``KEYHOUSE_ADMIN_TOKENS`` or generated.

With the setting unset and the default database (SQLite in the data
directory), one token is generated on first start into the data directory
(mode 0600, like the encryption key) and ``keyhouse admin-token`` prints it;
with ``KEYHOUSE_DATABASE_URL`` the setting is required
(``Settings.generates_secrets``). Only SHA-256 digests are kept in memory for
comparison, and a presented token is compared with every one of them by
``hmac.compare_digest``: the time taken does not tell how much of a guess
was right, nor which token matched.

``KEYHOUSE_VERIFY_TOKENS`` are compared the same way (``VerifyTokens``):
tokens for services that only verify keys, accepted by ``POST /verify``
and refused everywhere else (least privilege: an admin token could also
create accounts and read every key). Never generated.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from keyhouse.errors import ConfigurationError
from keyhouse.keys.crypto import read_or_create_private_file

__all__ = [
    "ADMIN_TOKEN_FILE",
    "AdminTokens",
    "VerifyTokens",
    "load_admin_tokens",
    "load_verify_tokens",
]

ADMIN_TOKEN_FILE = "admin_tokens"  # noqa: S105 (a file name)
MIN_TOKEN_LENGTH = 24
TOKEN_PREFIX = "kh_admin_"  # noqa: S105 (a prefix)


class AdminTokens:
    def __init__(self, tokens: list[str]) -> None:
        if not tokens:
            raise ConfigurationError("at least one admin token is needed")
        self._digests = [hashlib.sha256(t.encode("utf-8")).digest() for t in tokens]
        self.first = tokens[0]

    def __repr__(self) -> str:
        return f"AdminTokens(count={self.count})"

    @property
    def count(self) -> int:
        return len(self._digests)

    def matches(self, token: str) -> bool:
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found = False
        for known in self._digests:  # no early exit
            found |= hmac.compare_digest(digest, known)
        return found


class VerifyTokens(AdminTokens):
    """Tokens that may call ``POST /verify`` and nothing else."""

    def __repr__(self) -> str:
        return f"VerifyTokens(count={len(self._digests)})"


def _parse(spec: str, setting: str = "KEYHOUSE_ADMIN_TOKENS") -> list[str]:
    tokens = [t.strip() for t in spec.split(",") if t.strip()]
    for position, token in enumerate(tokens, 1):
        if len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or " " in token:
            raise ConfigurationError(
                f"{setting} entry {position}: a token is at least "
                f"{MIN_TOKEN_LENGTH} printable characters without spaces"
            )
    if not tokens:
        raise ConfigurationError(f"{setting} is set but holds no token")
    return tokens


def load_admin_tokens(spec: str | None, data_dir: Path, *, generate: bool = True) -> AdminTokens:
    """The tokens from the setting, or from (with ``generate``: generated into) the data dir."""
    if spec:
        return AdminTokens(_parse(spec))
    content = read_or_create_private_file(
        data_dir,
        ADMIN_TOKEN_FILE,
        lambda: TOKEN_PREFIX + secrets.token_urlsafe(32) + "\n",
        setting="KEYHOUSE_ADMIN_TOKENS",
        generate=generate,
    )
    return AdminTokens(_parse(content.replace("\n", ",")))


def load_verify_tokens(spec: str | None, admin: AdminTokens) -> VerifyTokens | None:
    """The verify-only tokens of ``KEYHOUSE_VERIFY_TOKENS``; None when unset.

    One that is also an admin token is refused: it would not be verify-only.
    """
    if not spec:
        return None
    tokens = _parse(spec, "KEYHOUSE_VERIFY_TOKENS")
    for position, token in enumerate(tokens, 1):
        if admin.matches(token):
            raise ConfigurationError(
                f"KEYHOUSE_VERIFY_TOKENS entry {position} is also in KEYHOUSE_ADMIN_TOKENS; "
                "a verify token must differ from every admin token"
            )
    return VerifyTokens(tokens)
