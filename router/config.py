"""Typed options of the worker-selection policies, as they appear in the policy document."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from backends.config import StrictModel


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
    cache_threshold: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Share of the prompt a worker must already hold (beyond the conversation's head) to
    take the request away from the prefix's home worker."""
    balance_abs_threshold: Annotated[int, Field(ge=0)] = 16
    """Load gap (requests) above which load wins over prefix affinity ..."""
    balance_rel_threshold: Annotated[float, Field(ge=1)] = 1.5
    """... provided the busiest worker also carries this many times the idlest one's load."""
    block_chars: Annotated[int, Field(ge=8, le=4096)] = 64
    """Granularity of the approximate prefix trees, in characters (~16 tokens)."""
    max_blocks_per_worker: Annotated[int, Field(ge=16)] = 200_000
    """Memory bound of each worker's tree; the least recently used blocks go first.
    A worker that reports its KV capacity (SGLang ``max_total_num_tokens``) bounds it too."""


SelectionConfig = Annotated[
    RoundRobinConfig | RandomConfig | LeastLoadConfig | PowerOfTwoConfig | ConsistentHashConfig
    | CacheAwareConfig,
    Field(discriminator="type"),
]
