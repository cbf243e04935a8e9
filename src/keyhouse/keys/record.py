"""What the key cache holds and verification decides on: a key row without its secrets.

Its own module so that the cache (which ``runtime`` builds) can name it
without importing the verifier, which imports ``runtime``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from keyhouse.keys.format import KeyType
from keyhouse.keys.restrictions import Restrictions
from keyhouse.limits.plan import Plan

__all__ = ["KeyRecord"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What verification needs of a key row (no secret in it); keys/repository.py
    ``find_record`` reads one."""

    id: str
    account_id: str
    environment_id: str | None
    key_type: KeyType
    name: str
    revoked: bool
    expires_at: datetime | None
    expiry_recorded: bool
    plan: Plan
    # Issue 15: None is unrestricted (keys/restrictions.py). Parsed once when
    # the cache is filled, so a verification never parses JSON or CIDRs.
    scopes: tuple[str, ...] | None = None
    restrictions: Restrictions | None = None
    # The account's refuseSecretKeysFromBrowsers.
    refuse_browsers: bool = False
