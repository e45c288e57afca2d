"""Reserve, then settle: the arithmetic of budget reservations, shared by both ledgers.

Admission reserves the most a request can cost: its prompt estimate plus its output bound for
every choice, in tokens and priced in dollars. A cap admits it when what the scope has used
today (or this month), plus what its requests in flight hold, plus this reservation, stays
within the cap. When it does not, a ``clamp`` budget grants fewer output tokens per choice (the
most that fit, at least one) and a ``reject`` budget refuses. Settlement charges the real usage
and releases the reservation, so under any interleaving what is charged passes a cap by at most
what one request's real usage exceeds its reservation (the upstream reported more than it was
allowed to produce, which the gateway clamps).

``policies.spend.grant`` is the reference; the Redis ledger runs the same arithmetic in Lua.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EPSILON = 1e-9
"""Dollars: sums of float prices must not refuse a request that fits exactly."""


@dataclass(frozen=True, slots=True)
class Cost:
    """The most one request can cost: its prompt, plus ``output`` tokens for each choice."""

    prompt_tokens: int
    prompt_usd: float
    choices: int
    """Completions generated (``n``, or ``best_of`` when larger)."""
    output_usd: float
    """Dollars per output token of one choice."""
    output: int
    """Output tokens per choice asked for: ``max_tokens``, or the model's bound."""

    def at(self, output: int) -> tuple[int, float]:
        """(tokens, dollars) reserved when ``output`` tokens per choice are granted."""
        return (self.prompt_tokens + output * self.choices,
                self.prompt_usd + output * self.choices * self.output_usd)


@dataclass(frozen=True, slots=True)
class Held:
    """What a scope's requests in flight have reserved and not settled yet."""

    tokens: int = 0
    usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Reservation:
    """A granted reservation, settled exactly once (or expired into a charge of all of it)."""

    request_id: str
    scope_ids: tuple[str, ...]
    model: str
    prompt_tokens: int
    tokens: int
    """Tokens held: prompt plus the granted output of every choice."""
    usd: float
    output: int
    """Output tokens per choice granted (``max_tokens`` is lowered to this when it is less)."""
    shared: bool = True
    """Held in the shared store (False: in the process's twin, during a Redis outage)."""


def fits(left: float, fixed: float, per: float) -> float:
    """Output tokens per choice that fit in ``left``: after ``fixed``, ``per`` each."""
    if per > 0:
        return math.floor((left - fixed + EPSILON) / per)
    return math.inf if left - fixed >= -EPSILON else -1
