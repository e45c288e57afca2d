"""The interface between the router and everything it picks from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from router.placement import PlacementStore


class WorkerView(Protocol):
    """What a selection policy may know about a worker."""

    @property
    def id(self) -> str:
        """``pool/index``: shown in headers, traces and metrics."""
        ...

    @property
    def address(self) -> str:
        """The worker's URL: its identity for hashing, stable when the list changes."""
        ...

    @property
    def load(self) -> int:
        """Requests in flight from this gateway plus the worker's own reported queue."""
        ...

    @property
    def capacity_tokens(self) -> int:
        """KV-cache capacity the worker reports (SGLang ``max_total_num_tokens``), 0 if unknown."""
        ...


@dataclass(frozen=True, slots=True)
class RoutingRequest:
    """Everything routing looks at, built once at the edge; a new need becomes a field here."""

    model: str
    """The public model name asked for."""
    tenant: str
    sticky_key: str
    """Session header, else the ``user`` field, else the API key's name."""
    prompt: str = ""
    """The prompt rendered canonically (``router.prompt_text``), for prefix matching."""
    head_chars: int = 0
    """Length of the prompt's head (through the first user turn): a conversation's identity."""
    retry: bool = False
    """A retry of the same request on another worker after a failure: what the first attempt
    counted (a new conversation's start) must not be counted again."""

    @property
    def head(self) -> str:
        return self.prompt[:self.head_chars]


@dataclass(frozen=True, slots=True)
class Selection:
    """A policy's pick, with why: the reason and scores go on the span and debug header."""

    worker: WorkerView
    reason: str
    scores: dict[str, float] = field(default_factory=dict)


class SelectionPolicy(Protocol):
    """Picks one worker from a non-empty list of healthy ones."""

    name: str
    debug_header: bool

    async def select(self, request: RoutingRequest, workers: Sequence[WorkerView]) -> Selection: ...

    def on_outcome(self, worker_id: str, request: RoutingRequest, completion: str) -> None:
        """The request finished on ``worker_id`` having generated ``completion``."""

    def on_worker_removed(self, worker_id: str) -> None:
        """The worker left the pool or turned unhealthy."""

    def share_placements(self, store: PlacementStore) -> None:
        """Read and write conversations' workers in ``store``, shared with the other replicas."""


class BasePolicy:
    """No-op event hooks, so a policy overrides only the events it cares about."""

    name = "base"
    debug_header = False

    def on_outcome(self, worker_id: str, request: RoutingRequest, completion: str) -> None:
        """A request finished: policies that learn from traffic record it."""

    def on_worker_removed(self, worker_id: str) -> None:
        """A worker left: forget what was known about it."""

    def share_placements(self, store: PlacementStore) -> None:
        """Policies that place conversations use the shared table; the others ignore it."""
