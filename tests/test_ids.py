"""Ids: ULIDs as the spec writes them, sorting in creation order."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from keyhouse.ids import ID_RE, _encode_ulid, is_id, new_id, new_ulid

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_datetime(id_: str) -> datetime:
    """The creation time encoded in an id: its first 10 characters, in milliseconds."""
    ms = 0
    for char in id_.rsplit("_", 1)[-1][:10]:
        ms = ms * 32 + CROCKFORD.index(char)
    seconds, millis = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=millis * 1000)


def spec_encoding(ms: int, rand: int) -> str:
    """The spec's layout, 5 bits a character from the most significant end."""
    value = (ms << 80) | rand
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def test_extremes() -> None:
    assert _encode_ulid(0, 0) == "0" * 26
    assert _encode_ulid(2**48 - 1, 2**80 - 1) == "7" + "Z" * 25
    assert _encode_ulid(1469918176385, 0) == spec_encoding(1469918176385, 0)


@given(st.integers(0, 2**48 - 1), st.integers(0, 2**80 - 1))
def test_every_value_encodes_as_the_spec_says(ms: int, rand: int) -> None:
    assert _encode_ulid(ms, rand) == spec_encoding(ms, rand)


def test_ids_sort_in_creation_order_within_a_millisecond() -> None:
    # A millisecond in the past: the generator's state stays behind the clock.
    made = [new_ulid(1_700_000_000_000)[0] for _ in range(1000)]
    assert made == sorted(made)
    assert len(set(made)) == 1000


def test_an_id_carries_its_creation_time() -> None:
    id_, created = new_id("key")
    assert is_id(id_, "key")
    assert ID_RE.fullmatch(id_)
    assert ulid_datetime(id_) == created
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60
