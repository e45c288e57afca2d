"""Knobs of a simulated upstream; every one is also a ``switchyard sim`` flag."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SimKind = Literal["sglang", "openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How one simulated worker or provider behaves.

    The latency model follows how SGLang spends time: prefill is paid only for prompt tokens
    not already in the radix cache, a request waits while ``max_running`` others decode, and
    each decode step slows down as the running batch grows.
    """

    kind: SimKind = "sglang"
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port; the running sim reports the one it got."""
    worker_id: str = "sim-0"
    """Named in the ``x-sim-worker`` response header and in ``/get_server_info``."""
    model: str = "sim-model"
    """The served model name (SGLang's ``--served-model-name``)."""
    seed: int = 0
    capacity_tokens: int = 200_000
    """Radix cache capacity in tokens (prompt and output); LRU leaves are evicted past it."""
    prefill_us_per_token: float = 50.0
    """Prefill cost per *uncached* prompt token, in microseconds."""
    base_ttft_ms: float = 2.0
    """Fixed scheduling cost before the first token."""
    itl_ms: float = 5.0
    """Inter-token latency with a batch of one."""
    itl_batch_factor: float = 0.05
    """Each further running request stretches the inter-token latency by this fraction."""
    max_running: int = 64
    """Requests decoded at once; the rest queue (``sglang:num_queue_reqs``)."""
    default_max_tokens: int = 32
    """Output length when the request sets no ``max_tokens``."""
    fail_rate: float = 0.0
    """Share of requests answered with HTTP 500 before any byte of output."""
    api_key: str | None = None
    """When set, requests must carry it (``Authorization: Bearer`` or Anthropic ``x-api-key``)."""
    zero_latency: bool = False
    """Answer at once, ignoring the latency model: the upstream for overhead benchmarks."""
    enable_cache_report: bool = False
    """SGLang's ``--enable-cache-report``: report ``usage.prompt_tokens_details.cached_tokens``.
    Off by default, as in SGLang, where usage then carries ``prompt_tokens_details: null``.
    Only the SGLang kind reads it (OpenAI and Anthropic always report their cache hits)."""
    enable_metrics: bool = False
    """SGLang's ``--enable-metrics``: serve ``/metrics``. Off by default, as in SGLang, where
    ``/metrics`` is then a 404 and only ``/v1/loads`` tells the worker's load."""
    is_embedding: bool = False
    """SGLang's ``--is-embedding``: the worker serves an embedding model (``/v1/embeddings``
    answers; without it SGLang refuses embeddings with a 400). The OpenAI kind always embeds."""
    embedding_dim: int = 64
    """Length of the sim's vectors (``dimensions`` may ask for fewer)."""
    embedding_float_only: bool = False
    """Answer float vectors whatever ``encoding_format`` asks (a server without base64)."""
    enable_priority_scheduling: bool = False
    """SGLang's ``--enable-priority-scheduling`` (with ``--default-priority-value 0``): the
    queue gauges of ``/metrics`` carry a total (``priority=""``) and a per-priority series."""
