"""Properties of generated keys: distinct, documented shape, checksummed.

Failures never show a key: the checks compute booleans and counts.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from keyhouse.keys.format import (
    ALPHABET,
    KeyFormat,
    KeyType,
    Kind,
    base62,
    checksum,
)
from tests.factories import expect_same_key, key_regex

FMT = KeyFormat("sk_", "pk_")
PREFIXES: dict[KeyType, str] = {"secret": "sk_", "public": "pk_"}
COUNT = 100_000
# The documented scanner expression (README, "Keys"), written out, not computed.
DOCUMENTED = {
    "secret": re.compile(r"\bsk_[0-9A-Za-z]{49}\b"),
    "public": re.compile(r"\bpk_[0-9A-Za-z]{49}\b"),
}


def test_100000_generated_keys_are_distinct_documented_and_checksummed() -> None:
    seen: set[str] = set()
    bad_shape = bad_regex = bad_parse = bad_prefix = 0
    for i in range(COUNT):
        key_type: KeyType = "secret" if i % 2 == 0 else "public"
        key = FMT.generate(key_type)
        seen.add(key)
        bad_shape += len(key) != 52
        bad_regex += DOCUMENTED[key_type].fullmatch(key) is None
        bad_regex += re.fullmatch(key_regex(PREFIXES[key_type]), key) is None
        parsed = FMT.parse(key)
        bad_parse += parsed.kind is not Kind.NATIVE
        # The prefix names the type, and the type is what was asked for.
        bad_prefix += parsed.key_type != key_type or not key.startswith(PREFIXES[key_type])
    assert len(seen) == COUNT, f"{COUNT - len(seen)} duplicate keys"
    assert (bad_shape, bad_regex, bad_parse, bad_prefix) == (0, 0, 0, 0)


def test_the_scanner_regex_finds_keys_in_text_and_only_them() -> None:
    key = FMT.generate("secret")
    text = f"config: token={key}, other=sk_tooshort"
    found = re.findall(key_regex("sk_"), text)
    assert len(found) == 1
    expect_same_key(found[0], key)


KEY_TYPES: list[KeyType] = ["secret", "public"]


def keys() -> st.SearchStrategy[tuple[KeyType, str]]:
    """(key type, key) built from drawn bits, so hypothesis can shrink and replay."""
    return st.tuples(st.sampled_from(KEY_TYPES), st.integers(0, 2**256 - 1)).map(
        lambda t: (t[0], _build(PREFIXES[t[0]], t[1]))
    )


def _build(prefix: str, value: int) -> str:
    random_part = base62(value, 43)
    return prefix + random_part + checksum(prefix + random_part)


@settings(max_examples=200)
@given(keys())
def test_every_single_character_change_fails_the_checksum(drawn: tuple[KeyType, str]) -> None:
    key_type, key = drawn
    assert FMT.parse(key).kind is Kind.NATIVE
    assert FMT.parse(key).key_type == key_type
    # Every position, every other character a key may hold (and a few it may not).
    still_native = 0
    for pos in range(len(key)):
        for char in ALPHABET + "_-.":
            if char == key[pos]:
                continue
            changed = key[:pos] + char + key[pos + 1 :]
            still_native += FMT.parse(changed).kind is Kind.NATIVE
    assert still_native == 0, f"{still_native} single-character changes still pass"


@settings(max_examples=200)
@given(keys(), st.data())
def test_a_changed_body_character_is_malformed_not_foreign(
    drawn: tuple[KeyType, str], data: st.DataObject
) -> None:
    # In the body (base62 for base62): recognised as ours, refused without a lookup.
    key_type, key = drawn
    pos = data.draw(st.integers(3, len(key) - 1))
    char = data.draw(st.sampled_from(ALPHABET).filter(lambda c: c != key[pos]))
    parsed = FMT.parse(key[:pos] + char + key[pos + 1 :])
    assert parsed.kind is Kind.MALFORMED
    assert parsed.key_type == key_type


@given(st.sampled_from(KEY_TYPES))
def test_prefix_names_the_type(key_type: KeyType) -> None:
    key = FMT.generate(key_type)
    assert key.startswith(PREFIXES[key_type])
    assert FMT.parse(key).key_type == key_type
    # Swapping the prefix to the other type's breaks the checksum (it covers the prefix).
    other: KeyType = "public" if key_type == "secret" else "secret"
    swapped = PREFIXES[other] + key[3:]
    assert FMT.parse(swapped).kind is Kind.MALFORMED
