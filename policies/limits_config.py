"""Policy settings for token counting, context budgets, prices, rate limits and spend budgets.

Where each model sits in the policy document:

* per model (``models.<name>``): ``tokens: TokenCountingConfig``, ``context: ContextConfig``,
  ``prices: PriceConfig``;
* per tenant (``tenants.<name>``) and per key (``tenants.<name>.keys[i]``):
  ``rate_limits: RateLimitConfig`` and ``budgets: BudgetConfig``;
* top level (``limits``): ``LimitsStoreConfig``, how the shared Redis store is used.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from backends.config import StrictModel

TokenizerName = Literal["o200k_base", "o200k_harmony", "cl100k_base", "p50k_base", "r50k_base"]
OverflowAction = Literal["reject", "drop_oldest", "truncate_middle"]
MaxTokensOverflow = Literal["clamp", "reject"]
RedisFailureMode = Literal["fail_open", "fail_closed"]


class TokenCountingConfig(StrictModel):
    """How the gateway counts a model's prompt tokens (``models.<name>.tokens``).

    Each message counts ``ceil((tokens_per_message + role + fields) * calibration_factor)``; a
    request adds ``ceil((3 + tools) * calibration_factor) + safety_margin_tokens``.
    """

    tokenizer: TokenizerName = "cl100k_base"
    """tiktoken encoding to count with: the model's own (``o200k_base`` for GPT-4o and later,
    ``cl100k_base`` for GPT-4 and GPT-3.5) or, for a self-hosted model whose tokenizer is not a
    tiktoken encoding, the closest one. ``cl100k_base`` ships with the gateway; the others are
    read from ``TIKTOKEN_CACHE_DIR`` and, when missing there, fall back to ``cl100k_base``
    (logged at startup)."""
    calibration_factor: Annotated[float, Field(gt=0, le=4)] = 1.0
    """Multiplier from the encoding's count to the model's real count. Measure it as
    ``real prompt_tokens / counted tokens`` over typical prompts (e.g. ~1.1-1.2 for Llama 3
    counted with cl100k_base on English text); keep 1.0 when ``tokenizer`` is the model's own."""
    tokens_per_message: Annotated[int, Field(ge=0, le=64)] = 3
    """Template tokens around each message besides its role: 3 for OpenAI models (and ChatML
    with special tokens); more for templates whose markers are plain text (the SGLang simulator
    spells ``<|im_start|>``/``<|im_end|>`` out as text: 13)."""
    safety_margin_tokens: Annotated[int, Field(ge=0)] = 0
    """Tokens added once per request on top of the calibrated count, for the reply priming of a
    non-OpenAI template (5 for the simulator) and the calibration error."""


class ContextConfig(StrictModel):
    """The context window of a model and what to do with a prompt that does not fit
    (``models.<name>.context``)."""

    context_window: Annotated[int, Field(ge=1)]
    """Tokens the model sees at once: prompt plus generated output."""
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    """Most tokens the model generates for one request; unset means up to the window."""
    reserve_output_tokens: Annotated[int, Field(ge=0)] = 0
    """Tokens kept free for the answer: a prompt fits only if it leaves at least this many."""
    overflow_action: OverflowAction = "reject"
    """For a prompt that does not fit: ``reject`` answers 400 ``context_length_exceeded`` with
    the counts; ``drop_oldest`` drops the oldest whole turns after the system prompt;
    ``truncate_middle`` also keeps the first turn (the longest prefix that stays the same from
    request to request, so the backend's prefix cache keeps hitting) and drops turns from the
    middle, like OpenAI's ``truncation: auto``. Turns are dropped whole: a tool call is never
    separated from its results, and the last user turn is always kept."""
    max_tokens_overflow: MaxTokensOverflow = "clamp"
    """A ``max_tokens`` larger than what is left after the prompt is lowered to what is left
    (``clamp``), or answered with 400 ``context_length_exceeded`` (``reject``)."""

    @model_validator(mode="after")
    def _reserve_fits(self) -> ContextConfig:
        if self.reserve_output_tokens >= self.context_window:
            raise ValueError("reserve_output_tokens must be smaller than context_window")
        if self.max_output_tokens is not None and self.reserve_output_tokens > self.max_output_tokens:
            raise ValueError("reserve_output_tokens cannot exceed max_output_tokens")
        return self


class PriceConfig(StrictModel):
    """What a model costs, in US dollars per million tokens (``models.<name>.prices``)."""

    input: Annotated[float, Field(ge=0)]
    """Prompt tokens not read from a prefix cache."""
    cached_input: Annotated[float, Field(ge=0)] | None = None
    """Prompt tokens read from a prefix cache (``prompt_tokens_details.cached_tokens``);
    unset means the ``input`` price."""
    output: Annotated[float, Field(ge=0)]
    """Generated tokens."""


class RateLimitConfig(StrictModel):
    """Request and token rates of one tenant or one key (``tenants.<t>.rate_limits``,
    ``tenants.<t>.keys[i].rate_limits``); a request must pass both its key's and its tenant's.

    Each limit is a token bucket refilled continuously at the per-minute rate; answers carry
    OpenAI's ``x-ratelimit-*`` headers, and 429s a ``Retry-After``.
    """

    rpm: Annotated[int, Field(ge=1)] | None = None
    """Requests per minute; unset means no request limit."""
    tpm: Annotated[int, Field(ge=1)] | None = None
    """Tokens per minute: admission takes the most the request can use (prompt estimate plus
    ``max_tokens``, or the model's output limit, for every choice), as OpenAI counts it; the
    difference is given back when the real usage is known."""
    burst: Annotated[float, Field(gt=0, le=60)] = 1.0
    """Bucket size in minutes of the limit: 1.0 lets a whole minute's quota go at once, 0.1 at
    most a tenth of it (then the rest comes at the steady rate). A request estimated at more
    tokens than the bucket holds is admitted only when the bucket is full."""
    on_redis_failure: RedisFailureMode = "fail_open"
    """When the shared Redis cannot be reached: ``fail_open`` keeps serving with this limit
    enforced per gateway process; ``fail_closed`` answers 503."""

    @model_validator(mode="after")
    def _has_a_limit(self) -> RateLimitConfig:
        if self.rpm is None and self.tpm is None:
            raise ValueError("set rpm, tpm or both")
        return self


class BudgetConfig(StrictModel):
    """Caps on what one tenant or key uses per UTC day and calendar month (``tenants.<t>.budgets``,
    ``tenants.<t>.keys[i].budgets``).

    Admission reserves the most a request can cost (its prompt estimate plus its output bound
    for every choice, priced), atomically with every other request in flight; the request is
    charged its real usage when it ends (also a stream the client cut short, or a request that
    failed after tokens were produced) and the rest of the reservation is returned. So the
    caps hold under concurrency: what is charged never passes a cap.
    """

    daily_tokens: Annotated[int, Field(ge=1)] | None = None
    """Prompt plus completion tokens per UTC day."""
    monthly_tokens: Annotated[int, Field(ge=1)] | None = None
    """Prompt plus completion tokens per calendar month (UTC)."""
    daily_usd: Annotated[float, Field(gt=0)] | None = None
    """Spend per UTC day in US dollars, priced with the models' ``prices``."""
    monthly_usd: Annotated[float, Field(gt=0)] | None = None
    """Spend per calendar month (UTC) in US dollars."""
    on_redis_failure: RedisFailureMode = "fail_open"
    """When the shared Redis cannot be reached: ``fail_open`` keeps serving and counts usage
    per process (replayed to Redis once it is back); ``fail_closed`` answers 503."""
    max_tokens_overflow: MaxTokensOverflow = "clamp"
    """When what is left of a cap cannot cover the request's output bound (``max_tokens``, or
    the model's limit when the request sets none) for every choice: ``clamp`` lowers
    ``max_tokens`` to what is left (the answer may stop with ``finish_reason: length``) and
    refuses only when not even one token per choice fits; ``reject`` refuses with 429
    ``insufficient_quota``."""

    @model_validator(mode="after")
    def _has_a_cap(self) -> BudgetConfig:
        if all(v is None for v in (self.daily_tokens, self.monthly_tokens, self.daily_usd,
                                   self.monthly_usd)):
            raise ValueError("set at least one of daily_tokens, monthly_tokens, daily_usd, monthly_usd")
        return self


class LimitsStoreConfig(StrictModel):
    """How rate limits and budgets use the shared Redis (top-level ``limits``)."""

    redis_timeout_s: Annotated[float, Field(gt=0)] = 0.25
    """Longest wait for one Redis call before the request is treated as a Redis failure."""
    redis_retry_interval_s: Annotated[float, Field(gt=0)] = 1.0
    """After a failure, seconds during which Redis is not tried again (requests go straight to
    the ``on_redis_failure`` behaviour instead of each waiting for a timeout)."""
    outage_log_interval_s: Annotated[float, Field(gt=0)] = 30.0
    """At most one log line per this many seconds while Redis is failing."""
    usage_retention_days: Annotated[int, Field(ge=1, le=3660)] = 93
    """Days the per-day usage records are kept (what ``/admin/usage`` can report)."""
    charge_dedup_s: Annotated[int, Field(ge=60)] = 172_800
    """Seconds Redis remembers a charged request id, so a retried or replayed charge is not
    counted twice. The per-process ledger keeps ids for at most 10 minutes (and 20k of them)."""
    reservation_ttl_s: Annotated[float, Field(ge=1, le=86_400)] = 120.0
    """How long a reservation lasts unless the gateway that made it renews it (each gateway
    renews the reservations of its requests in flight every third of this). A gateway that
    dies (``kill -9``, a lost node) stops renewing: its reservations expire and any gateway
    charges them in full, so a crash costs the tenant at most the unused rest of the
    reservation, never loses the charge."""
    default_max_output_tokens: Annotated[int, Field(ge=1)] = 4096
    """Output bound per choice reserved for a request that sets no ``max_tokens``, of a model
    whose ``context`` sets no limits; also the most completion tokens per choice charged for
    such a request when its upstream reports more than the streamed text can explain."""
    charge_journal_dir: str | None = None
    """Directory where charges that could not reach Redis are journalled (one file per
    process, removed once replayed). A gateway stopped or killed while Redis is down replays
    them from there when it starts again, as does any gateway that finds a file nobody holds.
    Unset: such charges live in memory only and are lost if the process stops during the
    outage. In Kubernetes, point it at a volume that outlives the pod."""
