"""The HTTP edge: the Litestar app, wire schemas, CLI, settings.

``create_app`` and ``Settings`` are loaded on first use (PEP 562): importing ``gateway.cli``
for ``switchyard --help`` must not pull in the app's ~1,000 modules (docs/performance.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.app import create_app
    from gateway.settings import Settings

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from gateway.app import create_app

        return create_app
    if name == "Settings":
        from gateway.settings import Settings

        return Settings
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
