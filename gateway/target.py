"""Which public model and version answer a request: the difficulty route, then the canary.

``resolve_target`` runs after authentication and before admission (admission needs the model
that will answer: its window, prices and limits). The canary's statistics are fed from here
too, once the request's record finishes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from backends.errors import ModelNotFoundError, PermissionDeniedError
from backends.types import ChatRequest, EmbeddingRequest, TextRequest
from gateway.operations import messages_of
from gateway.runtime import Runtime
from gateway.telemetry import RequestRecord
from policies.canary import Outcome, VersionChoice
from policies.keys import Caller

SESSION_HEADER = "x-switchyard-session"
VERSION_HEADER = "x-switchyard-model-version"


@dataclass(frozen=True, slots=True)
class Target:
    """The model and version a request goes to, and the headers that say so."""

    model: str
    """The public model that answers (a difficulty route's tier resolved)."""
    assignment: VersionChoice
    sticky_key: str
    """Session header, else ``user``, else the key's name: canary and routing stickiness."""
    headers: dict[str, str] = field(default_factory=dict)


def authorize(runtime: Runtime, caller: Caller, model: str) -> None:
    """404 for a model the policy does not have, 403 for one the key may not use."""
    if model not in runtime.models and model not in runtime.routes:
        raise ModelNotFoundError(f"The model '{model}' does not exist.", param="model")
    if not caller.may_use(model):
        raise PermissionDeniedError(f"Your API key may not use the model '{model}'.", param="model")


def resolve_target(runtime: Runtime, caller: Caller, call: ChatRequest | TextRequest | EmbeddingRequest,
                   request_headers: Mapping[str, str], record: RequestRecord) -> Target:
    """Authorize the asked model, resolve a difficulty route's tier and the canary version."""
    params = call.params
    model = params.model
    authorize(runtime, caller, model)
    headers = {"x-request-id": record.request_id}
    user = params.user if isinstance(params.user, str) else None
    sticky_key = request_headers.get(SESSION_HEADER) or user or caller.key_name
    route = runtime.routes.get(model)
    if route is not None:
        # being allowed the route means being allowed both of its tiers
        with record.phase("switchyard.classify") as span:
            decision = route.decide(messages_of(call), request_headers, caller.route_thresholds.get(model),
                                    sticky_key)
            span.set_attribute("switchyard.tier", decision.tier)
            span.set_attribute("switchyard.tier_reason", decision.reason)
        model = decision.model
        record.routed(route.name, decision.tier, decision.score)
        headers["x-switchyard-tier"] = decision.tier
        if decision.score is not None:
            headers["x-switchyard-difficulty"] = f"{decision.score:.4f}"
    headers["x-switchyard-model"] = model
    assignment = runtime.canary.assign(model, sticky_key)
    record.model, record.version = model, runtime.versions[model, assignment.version]
    headers[VERSION_HEADER] = record.version
    if assignment.rollout:
        record.on_finish.append(lambda: report_outcome(runtime, assignment, record))
    return Target(model, assignment, sticky_key, headers)


def report_outcome(runtime: Runtime, assignment: VersionChoice, record: RequestRecord) -> None:
    """Feed the canary's statistics: every upstream-served request of a model in a rollout,
    stable ones too (they are the baseline). Client errors and cache hits say nothing."""
    status = record.status
    if record.upstream_started is None or record.cache == "hit" or (400 <= status < 500 and status != 429):
        return
    ended = record.ended or time.perf_counter()
    # what the user sees: output moderation's hold-back counts, not just the upstream's first byte
    visible = record.visible_ttft_at
    first = visible if visible is not None else ended
    blocked = any(m.startswith("output:") and m.endswith(":block") for m in record.moderation)
    runtime.canaries.record(assignment, Outcome(ok=status < 400, status=status, ttft_s=first - record.started,
                                                e2e_s=ended - record.started, moderation_blocked=blocked))
