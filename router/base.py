"""The interface between the router and everything it picks from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class WorkerView(Protocol):
    """What a selection policy may know about a worker."""

    @property
    def id(self) -> str: ...

    @property
    def load(self) -> int:
        """Requests in flight from this gateway plus the worker's own reported queue."""
        ...


@dataclass(frozen=True, slots=True)
class RoutingRequest:
    """Everything routing looks at, built once at the edge; a new need becomes a field here."""

    model: str
    """The public model name asked for."""
    tenant: str
    sticky_key: str | None = None
    """Session header, else the ``user`` field, else the API key's name."""


@dataclass(frozen=True, slots=True)
class Selection:
    """A policy's pick, with why: the reason and scores go on the span and debug header."""

    worker: WorkerView
    reason: str
    scores: dict[str, float] = field(default_factory=dict)


class SelectionPolicy(Protocol):
    """Picks one worker from a non-empty list of healthy ones."""

    name: str

    async def select(self, request: RoutingRequest, workers: Sequence[WorkerView]) -> Selection: ...


class BasePolicy:
    """No-op event hooks, so a policy overrides only the events it cares about."""

    name = "base"

    def on_worker_removed(self, worker_id: str) -> None:
        """A worker left the pool: forget what was known about it."""
