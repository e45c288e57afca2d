"""The gateway's one mutable reference: the runtime currently serving requests."""

from __future__ import annotations

from backends.errors import ServiceUnavailableError
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.telemetry import Telemetry


class Gateway:
    """Holds the active ``Runtime``; swapping it is one assignment, so readers never lock.

    A request reads ``gateway.runtime`` once at its start and keeps that object, so it
    finishes under the policy it started with even if a new one is swapped in meanwhile.
    """

    def __init__(self, settings: Settings, telemetry: Telemetry) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self._runtime: Runtime | None = None
        self.load_error: str | None = None
        """Why no policy is active, shown by ``/readyz``."""
        telemetry.metrics.watch_pools(lambda: self._runtime.pools.values() if self._runtime else ())
        telemetry.metrics.watch_accounting(self._accounting_counts)

    def _accounting_counts(self) -> tuple[int, int]:
        if self._runtime is None:
            return 0, 0
        counters = self._runtime.accounting.usage_counters
        return counters.clamped, counters.failed

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise ServiceUnavailableError(
                f"No valid policy is loaded: {self.load_error or 'starting up'}",
                headers={"retry-after": "1"})
        return self._runtime

    @property
    def has_runtime(self) -> bool:
        return self._runtime is not None

    def swap(self, runtime: Runtime) -> Runtime | None:
        """Make ``runtime`` active; return the previous one for the caller to retire."""
        previous, self._runtime = self._runtime, runtime
        self.load_error = None
        if previous is not None:
            runtime.take_over(previous)
        # the policy's names are the only model and tenant label values metrics accept
        self.telemetry.metrics.set_policy(runtime.policy.version, runtime.digest,
                                          models=(*runtime.models, *runtime.routes),
                                          tenants=runtime.policy.tenants)
        return previous
