"""The upstream exchange of one admitted request: routing, the attempt, and its shadow.

``Exchange`` builds the routing request once, prepares the call for whichever deployment and
worker an attempt lands on (upstream model name, parameter table, tenant cache salt, trace
context) and sends it with retries and fallback (``gateway.upstream.call_upstream``). It owns
the worker slot of a non-streamed attempt for exactly the attempt; a stream's slot passes to
the relay's ``StreamLease``. A ``gate`` (the input checks still running, ``gateway.input_screen``)
is awaited while the attempt is under way and before its answer is handed on; if it raises,
the attempt is cancelled (an open stream closed, its slot released) here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

import msgspec

from backends import open_wire
from backends.errors import SwitchyardError, UpstreamError
from backends.params import fit_params
from gateway.operations import Chunk, Operation, Req, Resp
from gateway.runtime import Runtime
from gateway.target import Target
from gateway.telemetry import RequestRecord
from gateway.upstream import call_upstream
from policies.canary import Outcome
from policies.keys import Caller
from policies.moderation import Moderator
from router.base import RoutingRequest
from router.decide import Choice, choose
from router.isolation import salted_prompt, tenant_salt

log = logging.getLogger("switchyard.gateway")
T = TypeVar("T")


class Exchange(Generic[Req, Resp, Chunk]):
    """Send one admitted call upstream and hand back the worker that answered."""

    def __init__(self, runtime: Runtime, operation: Operation[Req, Resp, Chunk], call: Req, caller: Caller,
                 target: Target, record: RequestRecord, gate: Callable[[], Awaitable[None]] | None = None) -> None:
        self._runtime = runtime
        self._gate = gate
        self._operation: Operation[Req, Resp, Chunk] = operation
        self._call: Req = call
        self._caller, self._target, self._record = caller, target, record
        model = runtime.policy.models[target.model]
        self.isolated = model.cache_isolation == "tenant"
        prompt, head_chars = operation.render(call)
        if self.isolated:
            prompt, head_chars = salted_prompt(prompt, head_chars, caller.tenant)
        self.routing = RoutingRequest(model=target.model, tenant=caller.tenant, sticky_key=target.sticky_key,
                                      prompt=prompt, head_chars=head_chars)
        self._route = runtime.version_routes[target.model][target.assignment.version]

    def hides_cached_tokens(self, choice: Choice) -> bool:
        """A hosted provider's prompt cache spans every tenant: its ``cached_tokens`` are
        withheld from an isolated model's clients (``router.isolation``)."""
        return self.isolated and choice.worker.backend.kind != "sglang"

    def prepared(self, choice: Choice) -> Req:
        """The call as an attempt on ``choice`` sends it."""
        runtime, target, kind = self._runtime, self._target, choice.worker.backend.kind
        upstream_model = choice.deployment.upstream_model
        # the parameter table (backends/params.py): refuse or drop what this kind cannot take
        fitted = fit_params(self._call, kind, also_check=runtime.param_targets.get(self._call.params.model, ()),
                            drop_unsupported=runtime.policy.models[target.model].drops_unsupported_params(
                                target.assignment.version, self._route.deployments.index(choice.deployment)))
        if self.isolated and kind == "sglang":  # the engine's own isolation; a client's salt is overwritten
            fitted = msgspec.structs.replace(fitted, extra={**fitted.extra, "cache_salt": tenant_salt(self._caller.tenant)})
        trace_headers = self._record.upstream_call(choice.worker, upstream_model, self._operation.name)
        return msgspec.structs.replace(fitted, upstream_model=upstream_model, trace_headers=trace_headers)

    async def complete(self) -> tuple[Choice, Resp]:
        """A whole answer; the worker's slot is released before this returns."""
        runtime = self._runtime

        async def send(choice: Choice) -> Resp:
            return await self._operation.complete(choice.worker.backend, self.prepared(choice))

        async def drop(sent: tuple[Choice, Resp]) -> None:
            sent[0].worker.release()  # the answer of a blocked request is dropped unseen

        choice, answer = await self._gated(call_upstream(self._route, self.routing, self._record,
                                                         runtime.policy.retries, runtime.retry_budget, send), drop)
        choice.worker.release()
        return choice, answer

    async def open_stream(self) -> tuple[Choice, Chunk, AsyncIterator[Chunk]]:
        """The first chunk and the rest of a stream; the worker's slot stays taken for the
        caller's lease to release."""
        runtime = self._runtime

        async def send(choice: Choice) -> tuple[Chunk, AsyncIterator[Chunk]]:
            upstream = self._operation.stream(choice.worker.backend, self.prepared(choice))
            try:
                # peek before answering 200: a failure before the first byte can still be
                # retried elsewhere, or become a proper HTTP error
                return await anext(upstream), upstream
            except StopAsyncIteration:
                raise UpstreamError(f"{choice.worker.id} ended the stream before sending anything") from None
            except BaseException:
                await upstream.aclose()  # type: ignore[attr-defined,unused-ignore]
                raise

        async def drop(sent: tuple[Choice, tuple[Chunk, AsyncIterator[Chunk]]]) -> None:
            sent[0].worker.release()
            await sent[1][1].aclose()  # type: ignore[attr-defined]  # the worker stops generating

        choice, (first, upstream) = await self._gated(call_upstream(
            self._route, self.routing, self._record, runtime.policy.retries, runtime.retry_budget, send), drop)
        return choice, first, upstream

    async def _gated(self, attempt: Coroutine[Any, Any, T], drop: Callable[[T], Awaitable[None]]) -> T:
        """``attempt`` sent while the gate (the input checks) runs: a gate that raises cancels
        the attempt, or drops its result if it had one already."""
        if self._gate is None:
            return await attempt
        sent = asyncio.ensure_future(attempt)
        try:
            await asyncio.sleep(0)  # the attempt goes out first: the checks then take the core
            await self._gate()
        except BaseException:
            sent.cancel()
            with contextlib.suppress(BaseException):
                await drop(await sent)  # it had answered before the cancel could land
            raise
        return await sent

    def mirror(self, moderator: Moderator | None) -> None:
        """Send a copy to the canary's shadow version in the background (``mirror``)."""
        if self._target.assignment.shadow_version is not None:
            mirror(self._runtime, self._target, self._operation, self._call, self.routing, moderator)


def mirror(runtime: Runtime, target: Target, operation: Operation[Any, Any, Any], call: Any,
           routing: RoutingRequest, moderator: Moderator | None) -> None:
    """Send a copy to the shadow version, bounded by its permit; its answer is discarded after
    its latency, errors and moderation verdict are recorded. Never delays or fails the request,
    and is not charged to the tenant (the mirror is the release engineer's cost). Mirrors go
    out non-streamed: their first token is their whole answer. The runtime owns the task."""
    assignment = target.assignment
    permit = runtime.canaries.try_shadow(assignment)
    if permit is None or assignment.shadow_version is None:
        return
    route = runtime.version_routes[assignment.model][assignment.shadow_version]
    # mirrors go out whole; an operation that never streams has no ``stream`` to turn off
    mirrored = msgspec.structs.replace(call, params=open_wire.replace(call.params, stream=False)) \
        if call.is_stream else call
    drops = runtime.policy.models[assignment.model].drops_unsupported_params
    shadow_version = assignment.shadow_version

    async def run() -> None:
        started = time.perf_counter()
        outcome = Outcome(ok=False, status=502)
        try:
            choice = await choose(route, routing)
            choice.worker.acquire()
            try:
                fitted = fit_params(mirrored, choice.worker.backend.kind, drop_unsupported=drops(
                    shadow_version, route.deployments.index(choice.deployment)))
                request = msgspec.structs.replace(fitted, upstream_model=choice.deployment.upstream_model)
                answer = await operation.complete(choice.worker.backend, request)
            finally:
                choice.worker.release()
            elapsed = time.perf_counter() - started
            blocked = moderator is not None and moderator.checks_output and \
                moderator.check_text(operation.text(answer), "output").blocked is not None
            outcome = Outcome(ok=True, status=200, ttft_s=elapsed, e2e_s=elapsed, moderation_blocked=blocked)
        except SwitchyardError as exc:
            outcome = Outcome(ok=False, status=exc.status_code)
        except Exception:  # a mirror must never take anything down
            log.exception("shadow request to %s failed", assignment.shadow_version)
        finally:
            permit.release()
        runtime.canaries.record(assignment, outcome, shadow=True)

    runtime.shadows.spawn(run())
