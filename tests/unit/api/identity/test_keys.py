"""Keys and passwords: made, hashed, checked (pure)."""

from __future__ import annotations

import re

from aifactory.api.identity.keys import (
    KEY_PREFIX, key_hash, key_id_of, key_matches, new_key, password_hash, password_matches,
)


def test_a_new_key_has_the_fixed_prefix_an_id_and_only_its_hash_is_kept() -> None:
    made = new_key()
    assert made.key.startswith(KEY_PREFIX) and made.prefix == f"aif_{made.id}"
    assert re.fullmatch(r"[0-9a-f]{12}", made.id) and key_id_of(made.key) == made.id
    assert made.key_hash == key_hash(made.key) and made.key not in made.key_hash
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", made.key_hash)
    assert new_key().key != made.key


def test_a_key_matches_only_its_own_hash() -> None:
    made, other = new_key(), new_key()
    assert key_matches(made.key, made.key_hash)
    assert not key_matches(other.key, made.key_hash)
    assert not key_matches(made.key + "x", made.key_hash)
    assert not key_matches(made.key, None)


def test_text_that_is_not_a_key_names_no_id() -> None:
    for text in ("", "Bearer", "aif_", "aif_zzzzzzzzzzzz_" + "a" * 43, "lmsk_123", "aif_0123456789ab_short"):
        assert key_id_of(text) is None, text


def test_passwords_are_argon2_hashes_that_never_hold_the_password() -> None:
    hashed = password_hash("correct horse battery")
    assert hashed.startswith("$argon2id$") and "correct" not in hashed
    assert password_matches("correct horse battery", hashed)
    assert not password_matches("correct horse battery!", hashed)
    assert not password_matches("x", None) and not password_matches("x", "not a hash")
