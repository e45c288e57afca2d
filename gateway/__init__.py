"""The HTTP edge: the Litestar app, wire schemas, CLI, settings.

``create_app`` and ``Settings`` are loaded on first use (PEP 562): importing ``gateway.cli``
for ``switchyard --help`` must not pull in the app's ~1,000 modules (docs/performance.md).

``import httpx`` also imports httpx's own command-line client (rich, pygments, click: ~70
modules, 3 MiB of a serving process) unless that import fails, which httpx expects and
answers with a stub ``httpx.main``. Nothing here runs httpx's command line, so its module is
marked absent (a ``None`` entry in ``sys.modules`` makes its import raise ImportError).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

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
