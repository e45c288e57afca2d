"""The operations console at ``/console``: workers, routes, canaries, policy and usage.

It exists only when the policy sets ``admin_key_sha256``; it has no state of its own and reads
and changes the gateway through what the admin API reads and changes (``docs/console.md``).
"""

from __future__ import annotations

from gateway.console.api import API_HANDLERS
from gateway.console.pages import CSP, PAGE_HANDLERS
from gateway.console.session import COOKIE, CSRF_HEADER, SESSION_TTL_S, ConsoleSessions, CsrfError

CONSOLE_HANDLERS = (*PAGE_HANDLERS, *API_HANDLERS)
"""Every handler of the console and its admin endpoints, to register in ``create_app``."""

__all__ = ["CONSOLE_HANDLERS", "COOKIE", "CSP", "CSRF_HEADER", "SESSION_TTL_S", "ConsoleSessions", "CsrfError"]
