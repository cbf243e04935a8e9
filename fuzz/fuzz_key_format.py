"""Fuzz the key string: ``KeyFormat.parse``, ``checksum`` and ``base62``.

Run: ``python fuzz/fuzz_key_format.py -max_total_time=60`` (libFuzzer flags).
Any uncaught exception or failed invariant is a crash (non-zero exit).
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["keyhouse.keys.format"]):
    from keyhouse.keys.format import (
        ALPHABET,
        BODY_LEN,
        CHECKSUM_LEN,
        RANDOM_LEN,
        KeyFormat,
        Kind,
        base62,
        checksum,
    )

FORMAT = KeyFormat("sk_", "pk_")
PREFIXES = ("sk_", "pk_")


def _unbase62(text: str) -> int:
    value = 0
    for char in text:
        value = value * 62 + ALPHABET.index(char)
    return value


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, 4)
    if choice == 0:
        # Any string at all (surrogates included): parse never raises.
        text = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 120))
        parsed = FORMAT.parse(text)
        if parsed.kind is not Kind.FOREIGN:
            assert text.startswith(PREFIXES)
            assert len(text) == 3 + BODY_LEN
    elif choice == 1:
        # A key-shaped string: a prefix and 49 characters of the alphabet.
        prefix = PREFIXES[fdp.ConsumeIntInRange(0, 1)]
        body = "".join(ALPHABET[b % 62] for b in fdp.ConsumeBytes(BODY_LEN)).ljust(BODY_LEN, "0")
        key = prefix + body
        parsed = FORMAT.parse(key)
        expected = checksum(key[: 3 + RANDOM_LEN]) == key[3 + RANDOM_LEN :]
        assert parsed.kind is (Kind.NATIVE if expected else Kind.MALFORMED)
        assert parsed.key_type == ("secret" if prefix == "sk_" else "public")
    elif choice == 2:
        # A generated key with one character changed: never native (crc32
        # catches every burst of 32 bits or fewer).
        key = FORMAT.generate("secret" if fdp.ConsumeBool() else "public")
        assert FORMAT.parse(key).kind is Kind.NATIVE
        where = 3 + fdp.ConsumeIntInRange(0, BODY_LEN - 1)
        char = ALPHABET[fdp.ConsumeIntInRange(0, 61)]
        if key[where] != char:
            changed = key[:where] + char + key[where + 1 :]
            assert FORMAT.parse(changed).kind is Kind.MALFORMED
    elif choice == 3:
        # checksum of any ASCII string: 6 characters of the alphabet.
        text = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 100)).decode("latin-1")
        if text.isascii():
            out = checksum(text)
            assert len(out) == CHECKSUM_LEN
            assert set(out) <= set(ALPHABET)
    else:
        # base62 round-trips, or refuses with ValueError.
        value = fdp.ConsumeInt(fdp.ConsumeIntInRange(0, 40)) if fdp.ConsumeBool() else -1
        width = fdp.ConsumeIntInRange(0, 60)
        try:
            encoded = base62(value, width)
        except ValueError:
            assert value < 0 or value >= 62**width
            return
        assert len(encoded) == width
        assert _unbase62(encoded) == value


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
