"""Fuzz ``Verifier.verify``'s checks before the database.

The runtime is a stand-in whose cache answers "no such key" for every hash,
so a verification never awaits: the coroutine is driven by hand, and any key
string (JSON can carry lone surrogates) must end in a verdict, never an
exception.

Run: ``python fuzz/fuzz_verify.py -max_total_time=60`` (libFuzzer flags).
"""

from __future__ import annotations

import sys
from typing import Any

import atheris  # type: ignore[import-untyped]

# Only the code under test: instrumenting all 470 modules it imports takes 40 s.
with atheris.instrument_imports(
    include=["keyhouse.keys.verify", "keyhouse.keys.format", "keyhouse.keys.crypto"]
):
    from keyhouse.keys.format import ALPHABET, MAX_KEY_LENGTH, KeyFormat, Kind
    from keyhouse.keys.verify import Verdict, Verifier


class _Cache:
    """Every hash is a cached miss: the verdict is ``not_found`` without a database."""

    def get(self, key_hash: bytes) -> tuple[bool, None]:
        assert len(key_hash) == 32
        return True, None


class _Runtime:
    key_format = KeyFormat("sk_", "pk_")
    cache = _Cache()


VERIFIER = Verifier(_Runtime())  # type: ignore[arg-type]


def _verdict(key: str) -> Verdict:
    coro = VERIFIER.verify(key)
    try:
        coro.send(None)
    except StopIteration as done:
        result: Any = done.value
        assert isinstance(result, Verdict)
        return result
    coro.close()
    raise AssertionError("verify awaited before the database")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        key = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 260))
    else:
        prefix = ("sk_", "pk_")[fdp.ConsumeIntInRange(0, 1)]
        key = prefix + "".join(ALPHABET[b % 62] for b in fdp.ConsumeBytes(49))
    verdict = _verdict(key)
    malformed = (
        0 < len(key) <= MAX_KEY_LENGTH and _Runtime.key_format.parse(key).kind is Kind.MALFORMED
    )
    assert verdict.code == ("malformed" if malformed else "not_found")
    assert verdict.record is None


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
