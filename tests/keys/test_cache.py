"""The in-process key cache: bounded, short-lived, and never resurrecting."""

from __future__ import annotations

from keyhouse.keys.cache import KeyCache
from keyhouse.keys.verify import KeyRecord
from keyhouse.limits.plan import Plan


def record(key_id: str = "key_A") -> KeyRecord:
    return KeyRecord(
        id=key_id,
        account_id="acc_A",
        environment_id=None,
        key_type="secret",
        name="n",
        revoked=False,
        expires_at=None,
        expiry_recorded=False,
        plan=Plan(),
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hit_then_expiry_after_ttl() -> None:
    clock = FakeClock()
    cache = KeyCache(maxsize=10, ttl=2.0, clock=clock)
    cache.put(b"h", record())
    assert cache.get(b"h") == (True, record())
    clock.now += 1.99
    assert cache.get(b"h")[0] is True
    clock.now += 0.02
    assert cache.get(b"h") == (False, None)
    assert len(cache) == 0


def test_negative_entries_are_hits() -> None:
    cache = KeyCache(maxsize=10, ttl=2.0)
    cache.put(b"unknown", None)
    assert cache.get(b"unknown") == (True, None)


def test_bounded_least_recently_used_goes_first() -> None:
    cache = KeyCache(maxsize=3, ttl=60)
    for name in [b"a", b"b", b"c"]:
        cache.put(name, record())
    cache.get(b"a")  # a is now the most recent
    cache.put(b"d", record())
    assert len(cache) == 3
    assert cache.get(b"b") == (False, None)
    assert cache.get(b"a")[0] is True


def test_invalidate_drops_the_entry() -> None:
    cache = KeyCache(maxsize=10, ttl=60)
    cache.put(b"h", record())
    cache.invalidate(b"h")
    assert cache.get(b"h") == (False, None)


def test_a_lookup_that_straddles_an_invalidation_is_not_cached() -> None:
    # A lookup reads the database, a revoke commits and invalidates, then the
    # lookup would cache what it read before the revoke: it must not.
    cache = KeyCache(maxsize=10, ttl=60)
    epoch = cache.epoch
    cache.invalidate(b"h")
    cache.put(b"h", record(), epoch)
    assert cache.get(b"h") == (False, None)
    cache.put(b"h", record(), cache.epoch)
    assert cache.get(b"h")[0] is True


def test_ttl_zero_disables_caching() -> None:
    cache = KeyCache(maxsize=10, ttl=0)
    cache.put(b"h", record())
    assert cache.get(b"h") == (False, None)


def test_an_entry_lives_ttl_from_the_start_of_its_read() -> None:
    # A read that waited 1.5 s (a slow database) holds a row as of its start:
    # counted from the put, a change made during the wait would be honoured
    # up to 3.5 s later, past the TTL.
    clock = FakeClock()
    cache = KeyCache(maxsize=10, ttl=2.0, clock=clock)
    epoch = cache.epoch
    clock.now += 1.5
    cache.put(b"h", record(), epoch)
    clock.now += 0.49
    assert cache.get(b"h")[0] is True
    clock.now += 0.02
    assert cache.get(b"h") == (False, None)
