"""Only a hash and a ciphertext are stored; the encryption key stays private."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest

from keyhouse.errors import ConfigurationError
from keyhouse.keys.crypto import Keyring, hash_key, load_keyring, parse_keys


def raw_key() -> bytes:
    return os.urandom(32)


class TestKeyring:
    def test_round_trip(self) -> None:
        ring = Keyring([("k1", raw_key())])
        sealed = ring.encrypt("sk_secret", associated="key_A")
        assert b"sk_secret" not in sealed.ciphertext
        assert ring.decrypt(sealed.kid, sealed.ciphertext, associated="key_A") == "sk_secret"

    def test_ciphertext_is_bound_to_its_key_id(self) -> None:
        # A ciphertext copied onto another row must not decrypt there.
        ring = Keyring([("k1", raw_key())])
        sealed = ring.encrypt("sk_secret", associated="key_A")
        with pytest.raises(ConfigurationError):
            ring.decrypt(sealed.kid, sealed.ciphertext, associated="key_B")

    def test_new_key_first_keeps_old_ciphertexts_readable(self) -> None:
        old = ("old", raw_key())
        sealed = Keyring([old]).encrypt("sk_x", associated="key_A")
        rotated = Keyring([("new", raw_key()), old])
        assert rotated.current_kid == "new"
        assert rotated.decrypt("old", sealed.ciphertext, associated="key_A") == "sk_x"
        assert rotated.encrypt("sk_y", associated="key_B").kid == "new"

    def test_unknown_kid_is_a_configuration_error(self) -> None:
        ring = Keyring([("k1", raw_key())])
        with pytest.raises(ConfigurationError, match="'gone' is not configured"):
            ring.decrypt("gone", b"\0" * 40, associated="key_A")

    def test_decrypt_many_keeps_order_across_encryption_keys(self) -> None:
        old = ("old", raw_key())
        first = Keyring([old]).encrypt("sk_1", associated="key_A")
        ring = Keyring([("new", raw_key()), old])
        second = ring.encrypt("sk_2", associated="key_B")
        items = [
            (second.kid, second.ciphertext, "key_B"),
            ("old", first.ciphertext, "key_A"),
            (second.kid, second.ciphertext, "key_B"),
        ]
        assert ring.decrypt_many(items) == ["sk_2", "sk_1", "sk_2"]
        assert ring.decrypt_many([]) == []

    def test_decrypt_many_names_the_kid_that_fails(self) -> None:
        ring = Keyring([("k1", raw_key())])
        good = ring.encrypt("sk_1", associated="key_A")
        with pytest.raises(ConfigurationError, match="'gone' is not configured"):
            ring.decrypt_many([("k1", good.ciphertext, "key_A"), ("gone", b"\0" * 40, "key_B")])
        with pytest.raises(ConfigurationError, match="does not decrypt with encryption key 'k1'"):
            ring.decrypt_many([("k1", good.ciphertext, "key_A"), ("k1", good.ciphertext, "key_B")])

    def test_decrypt_each_gives_none_for_what_does_not_decrypt(self) -> None:
        ring = Keyring([("k1", raw_key())])
        good = ring.encrypt("sk_1", associated="key_A")
        foreign = Keyring([("k1", raw_key())]).encrypt("sk_2", associated="key_A")
        items = [
            ("k1", good.ciphertext, "key_A"),
            ("gone", good.ciphertext, "key_A"),  # encryption key not configured
            ("k1", good.ciphertext, "key_B"),  # copied onto another row
            ("k1", foreign.ciphertext, "key_A"),  # another k1: the tag fails
            ("k1", b"", "key_A"),  # too short to hold a nonce
            ("k1", good.ciphertext, "key_A"),
        ]
        assert ring.decrypt_each(items) == ["sk_1", None, None, None, None, "sk_1"]
        assert ring.decrypt_each([]) == []

    def test_decrypt_each_refuses_a_plaintext_that_is_not_text(self) -> None:
        ring = Keyring([("k1", raw_key())])
        nonce = os.urandom(12)
        aead = ring._keys["k1"]
        sealed = nonce + aead.encrypt(nonce, b"\xff\xfe", b"key_A")
        assert ring.decrypt_each([("k1", sealed, "key_A")]) == [None]

    def test_knows(self) -> None:
        ring = Keyring([("k2", raw_key()), ("k1", raw_key())])
        assert ring.knows("k1")
        assert ring.knows("k2")
        assert not ring.knows("k3")

    def test_repr_shows_no_material(self) -> None:
        material = raw_key()
        assert base64.b64encode(material).decode() not in repr(Keyring([("k1", material)]))


class TestParseKeys:
    def test_parses_newest_first(self) -> None:
        a, b = raw_key(), raw_key()
        spec = f"a:{base64.b64encode(a).decode()}, b:{base64.b64encode(b).decode()}"
        assert parse_keys(spec) == [("a", a), ("b", b)]

    @pytest.mark.parametrize(
        "spec",
        [
            "nocolon",
            "k1:not-base64!!",
            "k1:" + base64.b64encode(b"short").decode(),
            "bad kid:" + base64.b64encode(b"x" * 32).decode(),
        ],
    )
    def test_bad_entries_are_refused_without_echoing_them(self, spec: str) -> None:
        with pytest.raises(ConfigurationError) as info:
            parse_keys(spec)
        secret_part = spec.partition(":")[2]
        if secret_part:
            assert secret_part not in str(info.value)

    def test_duplicate_kid_is_refused(self) -> None:
        encoded = base64.b64encode(raw_key()).decode()
        with pytest.raises(ConfigurationError, match="twice"):
            parse_keys(f"a:{encoded},a:{encoded}")


class TestGeneratedKeyFile:
    def test_generated_once_with_mode_0600_and_reused(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        first = load_keyring(None, data_dir)
        path = data_dir / "encryption_keys"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        second = load_keyring(None, data_dir)
        assert second.current_kid == first.current_kid
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
        sealed = first.encrypt("sk_x", associated="key_A")
        assert second.decrypt(sealed.kid, sealed.ciphertext, associated="key_A") == "sk_x"

    def test_setting_wins_over_the_file(self, tmp_path: Path) -> None:
        ring = load_keyring(f"env1:{base64.b64encode(raw_key()).decode()}", tmp_path)
        assert ring.current_kid == "env1"
        assert not (tmp_path / "encryption_keys").exists()


def test_hash_is_sha256_of_the_key() -> None:
    assert hash_key("sk_abc") == hashlib.sha256(b"sk_abc").digest()
