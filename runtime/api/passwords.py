"""Users' passwords: scrypt (memory-hard, standard library) with a per-user salt, compared in constant time.

A stored hash is `scrypt$N$r$p$SALT$HASH` (salt and hash base64), so stronger parameters can
be chosen later and old hashes still verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

MIN_LENGTH = 10
MAX_LENGTH = 1024  # scrypt reads the whole password: a megabyte one would be a cheap way to burn CPU
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
_MAXMEM = 64 * 1024 * 1024


class PasswordPolicyError(ValueError):
    """A password that may not be set (too short, too long)."""


def check_policy(password: str) -> None:
    """Raise PasswordPolicyError (naming the rule, never the password) unless `password` may be set."""
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        raise PasswordPolicyError(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(f"a password may have at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    """The stored form of `password` with a fresh random salt (slow on purpose: call it in a thread)."""
    check_policy(password)
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)))


def verify_password(password: str, stored: str | None) -> bool:
    """Whether `password` matches `stored`; with no stored hash a dummy one is checked, so timing is alike."""
    if not isinstance(password, str) or len(password) > MAX_LENGTH:
        return False
    try:
        kind, n, r, p, salt, digest = (stored or _DUMMY).split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected) and stored is not None


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=HASH_BYTES)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Checked when a user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY = "$".join(("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(b"\0" * SALT_BYTES),
                   _b64(b"\0" * HASH_BYTES)))
