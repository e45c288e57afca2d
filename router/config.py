"""Typed options of the worker-selection policies, as they appear in the policy document."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from pydantic import Field, field_validator

from backends.config import StrictModel

_log = logging.getLogger("switchyard.policy")


class SelectionBase(StrictModel):
    """Options every policy has."""

    debug_header: bool = False
    """Add ``x-switchyard-route`` (reason and scores of the pick) to responses."""


class RoundRobinConfig(SelectionBase):
    """Send each request to the next healthy worker in turn."""

    type: Literal["round_robin"] = "round_robin"


class RandomConfig(SelectionBase):
    """Pick a healthy worker uniformly at random."""

    type: Literal["random"]


class LeastLoadConfig(SelectionBase):
    """Pick the worker with the fewest requests in flight plus queued (ties: first listed)."""

    type: Literal["least_load"]


class PowerOfTwoConfig(SelectionBase):
    """Sample two workers and take the less loaded: near least-load balance, no herding."""

    type: Literal["power_of_two"]


class ConsistentHashConfig(SelectionBase):
    """Pin each sticky key (session header, ``user``, else API key) to one worker.

    Rendezvous hashing: when a worker leaves, only the keys it held move.
    """

    type: Literal["consistent_hash"]


class CacheAwareConfig(SelectionBase):
    """Send a request where its prompt prefix is most likely cached, unless load is skewed."""

    type: Literal["cache_aware"]
    cache_threshold: Annotated[float | None, Field(ge=0, le=1)] = None
    """Deprecated and ignored: a policy that sets it loads with a warning in the log. (It was
    the share of the prompt a worker had to hold to take a later turn from the hashed home.
    Homes now depend on recent traffic, so a later turn follows whichever worker holds its
    head.)"""
    balance_abs_threshold: Annotated[int, Field(ge=0)] = 16
    """Load gap (requests) above which load wins over prefix affinity ..."""
    balance_rel_threshold: Annotated[float, Field(ge=1)] = 1.5
    """... provided the busiest worker also carries this many times the idlest one's load."""
    block_chars: Annotated[int, Field(ge=8, le=4096)] = 64
    """Granularity of the approximate prefix trees, in characters (~16 tokens)."""
    max_blocks_per_worker: Annotated[int, Field(ge=16)] = 200_000
    """Memory bound of each worker's tree; the least recently used blocks go first.
    A worker that reports its KV capacity (SGLang ``max_total_num_tokens``) bounds it too."""
    chars_per_token: Annotated[float, Field(ge=1, le=16)] = 6.0
    """Characters per token, to turn a worker's reported KV capacity into a tree budget. Err
    high: a tree that forgets a conversation its worker still holds sends the next turn to
    another worker (a full prefill there); one that remembers too long costs nothing extra."""
    group_chars: Annotated[int, Field(ge=0)] = 1024
    """Leading characters of the prompt that name its group (a shared system prompt): new
    conversations of a group are placed side by side, on one or two workers. Heads no longer
    than this are their own group. 0: every conversation is its own group."""
    balance_window: Annotated[int, Field(ge=10)] = 1000
    """New conversations over which group shares and each worker's starts are counted."""
    balance_gain: Annotated[float, Field(ge=0, le=8)] = 4.0
    """How hard a worker that started more than its share of new conversations loses slice:
    ``(share / mean) ** -balance_gain`` of an even slice. 0: slices stay even."""

    @field_validator("cache_threshold")
    @classmethod
    def _warn_deprecated(cls, value: float | None) -> float | None:
        if value is not None:
            _log.warning("selection.cache_threshold is deprecated and ignored (cache_aware follows "
                         "the worker holding a conversation's head); remove it from the policy")
        return value


SelectionConfig = Annotated[
    RoundRobinConfig | RandomConfig | LeastLoadConfig | PowerOfTwoConfig | ConsistentHashConfig
    | CacheAwareConfig,
    Field(discriminator="type"),
]
