"""API keys: hashing, and the lookup from a presented key to its tenant."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from backends.errors import AuthenticationError, NotFoundError
from policies.document import Policy
from policies.key_hash import hash_key, new_key
from policies.rate_limit import RateScope
from policies.scopes import key_scope, tenant_scope
from policies.spend import BudgetScope

# hash_key and new_key live in policies.key_hash (the CLI imports them without the document);
# re-exported here, where callers have always imported them
__all__ = ["Caller", "KeyRing", "hash_key", "new_key"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the tenant and key a request authenticated as."""

    tenant: str
    key_name: str
    key_hash: str
    models: frozenset[str]
    """Public model names allowed, or ``{"*"}`` for all."""
    route_thresholds: Mapping[str, float] = field(default_factory=dict)
    """Difficulty-route thresholds of this tenant, overridden by this key's."""
    rate_scopes: tuple[RateScope, ...] = ()
    """The tenant's and the key's rate limits, where set; built once with the key ring."""
    budget_scopes: tuple[BudgetScope, ...] = ()
    """The tenant's and the key's budgets, where set."""
    scope_ids: tuple[str, str] = field(init=False)
    """(tenant scope, key scope): one naming for rate limits, budgets and usage reports
    (names escaped, so ``:`` in a name cannot make two scopes one). Escaped once here: every
    request reads it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope_ids", (tenant_scope(self.tenant), key_scope(self.tenant, self.key_name)))

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
                thresholds = {**tenant.route_thresholds, **key.route_thresholds}
                tenant_id, key_id = tenant_scope(tenant_name), key_scope(tenant_name, key.name)
                rates = tuple(RateScope(i, c) for i, c in ((tenant_id, tenant.rate_limits),
                                                            (key_id, key.rate_limits)) if c)
                budgets = tuple(BudgetScope(i, c) for i, c in ((tenant_id, tenant.budgets),
                                                              (key_id, key.budgets)) if c)
                caller = Caller(tenant_name, key.name, key.sha256, frozenset(tenant.models), thresholds,
                                rates, budgets)
                self._callers[bytes.fromhex(key.sha256)] = caller

    def check_admin(self, authorization: str | None, admin_sha256: str | None) -> None:
        """Pass only the admin key; the admin API does not exist when no admin key is set."""
        if admin_sha256 is None:
            raise NotFoundError("Unknown route.")
        scheme, _, key = (authorization or "").partition(" ")
        digest = hashlib.sha256(key.strip().encode("utf-8")).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, bytes.fromhex(admin_sha256)):
            raise AuthenticationError("The admin API needs the admin key as 'Authorization: Bearer <key>'.")

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
