"""The policy document, keys, and (as they come) budgets, limits and moderation.

Names load on first use (PEP 562): ``import policies.key_hash`` (the CLI's ``keys`` commands)
must not import the document, Redis and the classifiers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from policies.document import Policy
    from policies.key_hash import hash_key
    from policies.keys import Caller, KeyRing
    from policies.loader import PolicyError, load_policy, parse_policy

__all__ = ["Caller", "KeyRing", "Policy", "PolicyError", "hash_key", "load_policy", "parse_policy"]

_HOME = {"Policy": "document", "Caller": "keys", "KeyRing": "keys", "hash_key": "key_hash",
         "PolicyError": "loader", "load_policy": "loader", "parse_policy": "loader"}


__getattr__ = lazy_exports(__name__, _HOME)
