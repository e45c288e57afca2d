"""API keys: hashing, and the lookup from a presented key to its tenant."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from backends.errors import AuthenticationError
from policies.document import Policy


def hash_key(plain: str) -> str:
    """The lower-case hex SHA-256 stored in the policy in place of the key."""
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()


def new_key(prefix: str = "sy-") -> str:
    """A fresh random key with 256 bits of entropy."""
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the tenant and key a request authenticated as."""

    tenant: str
    key_name: str
    key_hash: str
    models: frozenset[str]
    """Public model names allowed, or ``{"*"}`` for all."""

    def may_use(self, model: str) -> bool:
        return "*" in self.models or model in self.models


class KeyRing:
    """Maps presented keys to callers without storing or comparing any plain key.

    The lookup is by the key's SHA-256; the stored digest is then compared again with
    ``hmac.compare_digest`` so that no step of the check returns early on a partial match.
    """

    def __init__(self, policy: Policy) -> None:
        self._callers: dict[bytes, Caller] = {}
        for tenant_name, tenant in policy.tenants.items():
            for key in tenant.keys:
                caller = Caller(tenant_name, key.name, key.sha256, frozenset(tenant.models))
                self._callers[bytes.fromhex(key.sha256)] = caller

    def __len__(self) -> int:
        return len(self._callers)

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller behind an ``Authorization: Bearer <key>`` header, or 401."""
        if not authorization:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
            )
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationError("The Authorization header must be 'Bearer <key>'.")
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        caller = self._callers.get(digest)
        if caller is None or not hmac.compare_digest(bytes.fromhex(caller.key_hash), digest):
            raise AuthenticationError("Incorrect API key provided.")
        return caller
