"""The key string, pinned to README's "Keys" so scanners and tests can compute it."""

from __future__ import annotations

import re
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhouse.keys.format import ALPHABET, KeyFormat, Kind, base62, checksum
from tests.factories import key_regex

FMT = KeyFormat("sk_", "pk_")


def reference_base62(value: int, width: int) -> str:
    # Written from README's "Keys" (base62 is 0-9A-Za-z), independently of the implementation.
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    out = ""
    while value > 0:
        out = digits[value % 62] + out
        value //= 62
    return out.rjust(width, "0")


class TestBase62:
    def test_alphabet_order(self) -> None:
        assert (
            ALPHABET == "0123456789" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abcdefghijklmnopqrstuvwxyz"
        )

    @given(st.integers(min_value=0, max_value=2**256 - 1))
    def test_matches_reference_and_pads_to_43(self, value: int) -> None:
        assert base62(value, 43) == reference_base62(value, 43)

    def test_zero_is_all_zeros(self) -> None:
        assert base62(0, 6) == "000000"

    def test_too_wide_value_is_refused(self) -> None:
        with pytest.raises(ValueError, match="width"):
            base62(62**6, 6)


class TestGenerate:
    @pytest.mark.parametrize(("key_type", "prefix"), [("secret", "sk_"), ("public", "pk_")])
    def test_shape_and_checksum(self, key_type: str, prefix: str) -> None:
        key = FMT.generate("secret" if key_type == "secret" else "public")
        assert key.startswith(prefix)
        body = key[len(prefix) :]
        assert len(body) == 49
        assert set(body) <= set(ALPHABET)
        expected = reference_base62(zlib.crc32((prefix + body[:43]).encode("ascii")), 6)
        assert body[43:] == expected
        assert re.fullmatch(key_regex(prefix), key)

    def test_keys_are_distinct(self) -> None:
        keys = {FMT.generate("secret") for _ in range(2000)}
        assert len(keys) == 2000

    def test_custom_prefix(self) -> None:
        fmt = KeyFormat("acme_sk_", "acme_pk_")
        key = fmt.generate("public")
        assert key.startswith("acme_pk_")
        assert fmt.parse(key).kind is Kind.NATIVE
        assert fmt.parse(key).key_type == "public"
        # The default prefixes do not recognise a branded key as native.
        assert FMT.parse(key).kind is Kind.FOREIGN

    def test_checksum_is_crc32_of_prefix_and_random(self) -> None:
        assert checksum("sk_" + "0" * 43) == reference_base62(
            zlib.crc32(("sk_" + "0" * 43).encode()), 6
        )


class TestParse:
    def test_generated_keys_parse_as_native_of_their_type(self) -> None:
        assert FMT.parse(FMT.generate("secret")).key_type == "secret"
        assert FMT.parse(FMT.generate("public")).key_type == "public"

    @settings(max_examples=300)
    @given(data=st.data())
    def test_any_single_character_change_is_rejected(self, data: st.DataObject) -> None:
        # Built from drawn bits, not secrets: hypothesis must be able to replay it.
        prefix = data.draw(st.sampled_from(["sk_", "pk_"]))
        random_part = base62(data.draw(st.integers(0, 2**256 - 1)), 43)
        key = prefix + random_part + checksum(prefix + random_part)
        assert FMT.parse(key).kind is Kind.NATIVE
        pos = data.draw(st.integers(min_value=0, max_value=len(key) - 1))
        new_char = data.draw(st.sampled_from(ALPHABET + "_-.").filter(lambda c: c != key[pos]))
        changed = key[:pos] + new_char + key[pos + 1 :]
        # Changed prefix: not ours (looked up, then unknown); changed body: checksum fails.
        assert FMT.parse(changed).kind is not Kind.NATIVE

    @pytest.mark.parametrize(
        "value",
        ["", "sk_", "sk_short", "pk_" + "a" * 48, "sk_" + "a" * 50, "Bearer", "x" * 300],
    )
    def test_other_strings_are_foreign(self, value: str) -> None:
        assert FMT.parse(value).kind is Kind.FOREIGN

    def test_non_base62_body_is_foreign(self) -> None:
        key = FMT.generate("secret")
        assert FMT.parse(key[:10] + "-" + key[11:]).kind is Kind.FOREIGN

    def test_mask_shows_prefix_and_last_four(self) -> None:
        key = FMT.generate("secret")
        assert FMT.mask(key, "secret") == f"sk_…{key[-4:]}"
