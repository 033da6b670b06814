"""Portal passwords, hashed with argon2id (argon2-cffi): :class:`Passwords` hashes, verifies
(in constant work: an unknown user is checked against a dummy hash, so the answer takes as long
as for a wrong password) and tells when a stored hash was made with other parameters than the
current ones (then :mod:`pbx.api.logins` rehashes it on the next successful login).

Hashing takes tens of milliseconds of CPU on purpose: callers run it in a worker thread, never
on the event loop that carries the calls.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["MAX_PASSWORD", "MIN_PASSWORD", "Passwords"]

MIN_PASSWORD = 8
#: Longer passwords are refused before hashing (argon2 would take them; the API must not hash
#: megabytes for a stranger).
MAX_PASSWORD = 256


class Passwords:
    """Hash and verify portal passwords (``hasher``: the argon2 parameters; the library's
    defaults, RFC 9106's second recommendation, unless given)."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._dummy = self.hasher.hash("not a password of anybody")

    def hash(self, password: str) -> str:
        """The PHC string of ``password`` (ValueError when it is too short or too long)."""
        check(password)
        return self.hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored`` (None: an unknown user — a dummy hash is
        verified instead, the same work and the answer False)."""
        if len(password) > MAX_PASSWORD:
            password = password[:MAX_PASSWORD]  # the same work, never a match below
            stored = None
        try:
            ok = self.hasher.verify(stored or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return ok and stored is not None

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` was made with other parameters than the current ones."""
        try:
            return self.hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True


def check(password: str) -> None:
    """ValueError unless ``password`` is an acceptable new password."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"a password may have at most {MAX_PASSWORD} characters")
