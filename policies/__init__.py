"""The policy document, keys, and (as they come) budgets, limits and moderation."""

from __future__ import annotations

from policies.document import Policy
from policies.keys import Caller, KeyRing, hash_key
from policies.loader import PolicyError, load_policy, parse_policy

__all__ = ["Caller", "KeyRing", "Policy", "PolicyError", "hash_key", "load_policy", "parse_policy"]
