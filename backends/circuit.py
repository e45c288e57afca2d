"""Per-worker circuit breakers: stop sending to a worker that keeps failing, probe it later.

closed --(N consecutive failures, or error rate over a window)--> open
open --(open_s elapsed)--> half_open: up to ``half_open_probes`` requests go through
half_open --(a probe succeeds)--> closed;  --(a probe fails)--> open again
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import Field

from backends.config import StrictModel

CircuitState = Literal["closed", "open", "half_open"]
STATE_VALUES: dict[CircuitState, int] = {"closed": 0, "half_open": 1, "open": 2}
"""The ``switchyard_backend_circuit_state`` gauge's values."""


class CircuitBreakerConfig(StrictModel):
    """When a worker's circuit opens and how it is probed (``backends.<name>.resilience``)."""

    enabled: bool = True
    consecutive_failures: Annotated[int, Field(ge=1)] = 5
    """Open after this many failures in a row."""
    error_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    """... or when this share of the last ``window`` requests failed ..."""
    window: Annotated[int, Field(ge=2)] = 20
    min_requests: Annotated[int, Field(ge=1)] = 10
    """... once the window holds at least this many requests."""
    open_s: Annotated[float, Field(gt=0)] = 10.0
    """How long an open circuit refuses requests before half-open probes."""
    half_open_probes: Annotated[int, Field(ge=1)] = 1
    """Requests let through at once while half-open."""


class CircuitBreaker:
    """The breaker of one worker. Failures are what the gateway could retry elsewhere:
    connect errors, timeouts, 5xx, 429 and broken streams, not the client's 4xx."""

    __slots__ = ("_clock", "_config", "_consecutive", "_opened_at", "_outcomes", "_probes", "state")

    def __init__(self, config: CircuitBreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self.state: CircuitState = "closed"
        self._consecutive = 0
        self._outcomes: deque[bool] = deque(maxlen=config.window)
        self._opened_at = 0.0
        self._probes = 0

    @property
    def available(self) -> bool:
        """May a request be sent now? (An open circuit turns half-open once ``open_s`` passed.)"""
        if self.state == "closed" or not self._config.enabled:
            return True
        if self.state == "open":
            if self._clock() - self._opened_at < self._config.open_s:
                return False
            self.state, self._probes = "half_open", 0
        return self._probes < self._config.half_open_probes

    def on_attempt(self) -> None:
        """A request was sent; while half-open it is one of the probes."""
        if self.state == "half_open":
            self._probes += 1

    def on_success(self) -> None:
        self._consecutive = 0
        self._outcomes.append(True)
        if self.state != "closed":
            self.state = "closed"
            self._outcomes.clear()

    def on_failure(self) -> None:
        if self.state == "open":
            return  # requests sent before it opened, failing late: it is open already
        self._consecutive += 1
        self._outcomes.append(False)
        if self.state == "half_open":
            self._open()
            return
        config = self._config
        failed = self._outcomes.count(False)
        if self._consecutive >= config.consecutive_failures or (
                len(self._outcomes) >= config.min_requests and failed / len(self._outcomes) >= config.error_rate):
            self._open()

    def _open(self) -> None:
        if self._config.enabled:
            self.state, self._opened_at, self._probes = "open", self._clock(), 0
            self._consecutive = 0
            self._outcomes.clear()
