"""Package names that load on first use (PEP 562), for packages whose import must stay cheap.

    __getattr__ = lazy_exports(__name__, {"Policy": "document", ...})

The CLI's commands that do not serve import a package for one or two names; the package's
``__init__`` lists where each name lives, and its module is imported only when the name is
first read. ``TYPE_CHECKING`` imports beside it keep the names typed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that reads ``name`` from ``package.<homes[name]>``."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    return __getattr__
