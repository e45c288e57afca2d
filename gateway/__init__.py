"""The HTTP edge: the Litestar app, wire schemas, CLI, settings."""

from __future__ import annotations

from gateway.app import create_app
from gateway.settings import Settings

__all__ = ["Settings", "create_app"]
