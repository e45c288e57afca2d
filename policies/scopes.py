"""Scope ids: how a tenant or a key is named in rate limits, budgets, usage and store keys.

A scope id is ``tenant:<tenant>`` or ``key:<tenant>:<key>`` with each name percent-encoded, so
``:`` can only be a separator: tenant ``a`` with key ``b:c`` (``key:a:b%3Ac``) and tenant
``a:b`` with key ``c`` (``key:a%3Ab:c``) never share a bucket, a budget or a usage record.
``{`` and ``}`` are encoded too, so a name cannot forge the Redis Cluster hash tag that keeps
every key of one tenant in one slot (``hash_tag``).
"""

from __future__ import annotations

from urllib.parse import quote


def escape(name: str) -> str:
    """``name`` with everything but letters, digits and ``_.-~`` percent-encoded."""
    return quote(name, safe="")


def tenant_scope(tenant: str) -> str:
    """The scope id of a tenant: ``tenant:<escaped tenant>``."""
    return f"tenant:{escape(tenant)}"


def key_scope(tenant: str, key: str) -> str:
    """The scope id of one key of a tenant: ``key:<escaped tenant>:<escaped key>``."""
    return f"key:{escape(tenant)}:{escape(key)}"


def scope_tenant(scope_id: str) -> str:
    """The escaped tenant of a scope id (what ``hash_tag`` groups by)."""
    parts = scope_id.split(":")
    return parts[1] if len(parts) > 1 else escape(scope_id)


def hash_tag(scope_id: str) -> str:
    """``{<escaped tenant>}``: the Redis Cluster hash tag of every key of the scope's tenant,
    so one Lua script may touch a request's key and tenant records together."""
    return "{" + scope_tenant(scope_id) + "}"

