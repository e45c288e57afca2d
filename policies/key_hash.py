"""API keys as the policy stores them: a SHA-256 digest, and fresh random keys.

Kept apart from ``policies.keys`` (which needs the policy document) so ``switchyard keys hash``
and ``keys new`` start without importing it.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["hash_key", "new_key"]


def hash_key(plain: str) -> str:
    """The lower-case hex SHA-256 stored in the policy in place of the key."""
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()


def new_key(prefix: str = "sy-") -> str:
    """A fresh random key with 256 bits of entropy."""
    return prefix + secrets.token_urlsafe(32)
