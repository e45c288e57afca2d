"""Prefix-cache isolation between tenants: the side channel, and what closes it.

A prefix cache answers faster, and reports ``cached_tokens``, for a prompt whose beginning it
already holds, whoever sent it. Tenant B can therefore test guesses of tenant A's system
prompt on a shared model: the right guess comes back with a long cached prefix, a wrong one
without. With ``cache_isolation: tenant`` on a model:

* **SGLang workers** get a per-tenant ``cache_salt`` on every request (SGLang's radix key
  includes it, so one tenant's blocks never match another's); any ``cache_salt`` a client
  sends is overwritten, so no tenant can pick another's. This closes the channel in the
  engine, both the ``cached_tokens`` figure and the timing.
* **Cache-aware routing** hashes each tenant's prompts with its own salt, so the router's
  picture of each worker's cache matches the engine's and one tenant's conversations are not
  steered onto another's prefix.
* **Hosted providers** (OpenAI-compatible, Anthropic) cache per account: the gateway's. There
  the gateway withholds ``cached_tokens`` from the client (reports 0) and still charges the
  cached price; the timing difference remains, so full isolation there needs a provider
  account (a deployment) per tenant.

The cost: tenants no longer share one system prompt's cached prefix on a worker.
"""

from __future__ import annotations

import hashlib

from backends import open_wire
from backends.types import PromptTokensDetails, Usage

_SALT_SEPARATOR = "\x1d"
"""Group separator: cannot be confused with prompt text (``router.prompt_text`` uses 1e/1f)."""


def tenant_salt(tenant: str) -> str:
    """The cache salt of a tenant: stable across replicas and restarts, not the name itself."""
    return hashlib.sha256(f"switchyard-cache-salt:{tenant}".encode()).hexdigest()[:32]


def salted_prompt(prompt: str, head_chars: int, tenant: str) -> tuple[str, int]:
    """The routing prompt and head length with the tenant's salt in front: block hashes and
    prompt groups then differ between tenants for the same text."""
    salt = f"{_SALT_SEPARATOR}{tenant_salt(tenant)}{_SALT_SEPARATOR}"
    return salt + prompt, head_chars + len(salt)


def without_cached_tokens(usage: Usage) -> Usage:
    """A copy of ``usage`` reporting no cached prompt tokens (the original stays for charging)."""
    details = usage.prompt_tokens_details
    if not isinstance(details, PromptTokensDetails) or not details.cached_tokens:
        return usage
    return open_wire.replace(usage, prompt_tokens_details=open_wire.replace(details, cached_tokens=0))
