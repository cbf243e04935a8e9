"""The in-process key cache: a bounded LRU by key hash, with a short TTL.

Verification must not cost a database round trip per request, and must not
keep honouring a revoked key for long. An entry lives at most ``ttl``
seconds (2 s by default) from the start of the read that made it, so a
change made elsewhere reaches this process within the TTL even when its
notification is lost (db/notify.py): the row read was at least that fresh.
Changes made in this process drop the entry at once. Unknown hashes are
cached too (``None``), so a flood of made-up keys costs one lookup per hash
per TTL, not one per request. Expiry is not decided here: the record
carries ``expires_at`` and the verifier compares it with the clock on every
use.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from keyhouse.keys.record import KeyRecord

__all__ = ["Epoch", "KeyCache"]


class Epoch(NamedTuple):
    """Taken before a lookup: what ``put`` needs to cache its result safely."""

    invalidations: int  # a change since then: the result may predate it, not cached
    at: float  # the entry expires ``ttl`` after this, not after the put


class KeyCache:
    def __init__(
        self,
        maxsize: int = 100_000,
        ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.maxsize = maxsize
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, KeyRecord | None]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        # Bumped by every invalidation: a lookup that started before one must
        # not put what it read (it may predate the change).
        self._invalidations = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_hash: bytes) -> tuple[bool, KeyRecord | None]:
        """``(True, record)`` on a fresh hit (None: a known unknown), else ``(False, None)``."""
        entry = self._entries.get(key_hash)
        if entry is not None:
            if entry[0] > self._clock():
                self._entries.move_to_end(key_hash)
                self.hits += 1
                return True, entry[1]
            del self._entries[key_hash]
        self.misses += 1
        return False, None

    @property
    def epoch(self) -> Epoch:
        """Take it before a lookup and hand it to ``put`` with the lookup's result."""
        return Epoch(self._invalidations, self._clock())

    def put(self, key_hash: bytes, record: KeyRecord | None, epoch: Epoch | None = None) -> None:
        """Cache ``record``; with ``epoch``, only if nothing was invalidated since it was taken,
        and until ``ttl`` after it (the read may have waited: its row is no fresher).
        """
        if self.maxsize <= 0 or self.ttl <= 0:
            return
        if epoch is None:
            started = self._clock()
        elif epoch.invalidations != self._invalidations:
            return
        else:
            started = epoch.at
        self._entries[key_hash] = (started + self.ttl, record)
        self._entries.move_to_end(key_hash)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def invalidate(self, key_hash: bytes) -> None:
        self._invalidations += 1
        self._entries.pop(key_hash, None)

    def clear(self) -> None:
        self._invalidations += 1
        self._entries.clear()
