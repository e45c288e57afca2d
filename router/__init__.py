"""Routing decisions: which model, which version, which worker."""

from __future__ import annotations

from router.base import BasePolicy, RoutingRequest, Selection, SelectionPolicy, WorkerView
from router.policies import build_policy

__all__ = ["BasePolicy", "RoutingRequest", "Selection", "SelectionPolicy", "WorkerView", "build_policy"]
