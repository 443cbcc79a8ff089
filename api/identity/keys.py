"""API keys and passwords: made, hashed and checked here; pure functions, no I/O.

A key is `aif_<id>_<secret>`: the id (12 hex digits) names the ApiKey resource that holds the key's sha256, so a
presented key is found without a scan and checked with one constant-time comparison. The secret has 256 bits of
entropy: a plain sha256 is the right hash for it (a slow password hash would only slow every request down).
Passwords, chosen by people, are hashed with Argon2id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

KEY_PREFIX = "aif_"
_KEY = re.compile(r"^aif_([0-9a-f]{12})_([A-Za-z0-9_-]{32,100})$")
# Compared against when the presented key names no known id, so that unknown and wrong keys take the same time.
_NO_HASH = "sha256:" + "0" * 64


@dataclass(frozen=True)
class NewKey:
    id: str
    key: str  # shown once, never stored
    key_hash: str

    @property
    def prefix(self) -> str:
        return key_prefix(self.id)


def key_prefix(key_id: str) -> str:
    """What lists show of a key: enough to recognise it, nothing of its secret."""
    return f"{KEY_PREFIX}{key_id}"


def new_key() -> NewKey:
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return NewKey(key_id, key, key_hash(key))


def key_hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    """The id a presented key names, or None when it is not shaped like one of our keys."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def key_matches(key: str, stored_hash: str | None) -> bool:
    """Constant-time check of a presented key against a stored hash (a missing hash never matches)."""
    return hmac.compare_digest(key_hash(key), stored_hash or _NO_HASH) and stored_hash is not None


_passwords = PasswordHasher()


def password_hash(password: str) -> str:
    return _passwords.hash(password)


def password_matches(password: str, stored_hash: str | None) -> bool:
    if not stored_hash:
        return False
    try:
        return _passwords.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
