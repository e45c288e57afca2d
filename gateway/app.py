"""``create_app(settings)``: the Litestar application, with everything built and passed in."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from opentelemetry import trace

from gateway.admin import admin_usage, get_policy, put_policy
from gateway.after_send import after_send
from gateway.canary_admin import CANARY_ADMIN_HANDLERS
from gateway.completions import chat_completions, text_completions
from gateway.console import CONSOLE_HANDLERS
from gateway.doors.anthropic_render import error_body as anthropic_error_body
from gateway.doors.anthropic_routes import MESSAGES_HANDLERS, MESSAGES_PATHS
from gateway.doors.embeddings import embeddings
from gateway.doors.responses_store import ResponseStore
from gateway.errors import EXCEPTION_HANDLERS, PATH_ERRORS_STATE
from gateway.openapi import describe
from gateway.policy_manager import PolicyManager
from gateway.probes import (
    admin_metrics,
    healthz,
    list_models,
    metrics,
    readyz,
    retrieve_model,
)
from gateway.responses_api import RESPONSE_STORE_STATE, RESPONSES_HANDLERS
from gateway.settings import Settings
from gateway.state import Gateway
from gateway.telemetry import Telemetry
from policies.canary import CanaryController, Transition
from policies.moderation import ModerationClassifier, ModerationModelError
from policies.moderation.scorers import ModerationModels
from router.difficulty import ClassifierError, DifficultyClassifier

log = logging.getLogger("switchyard.gateway")


def _load_classifier(settings: Settings) -> tuple[DifficultyClassifier | None, str]:
    """The process's one classifier session, opened at start-up; its error if it cannot be."""
    try:
        return DifficultyClassifier.load(settings.classifier_path), ""
    except ClassifierError as exc:
        log.error("%s", exc.message)
        return None, exc.message


def _load_moderation(settings: Settings) -> tuple[ModerationModels | None, str]:
    """The process's moderation classifiers; their error if the n-gram model cannot be loaded
    (policies that moderate categories are then refused with that reason). The cascade's
    encoder is loaded later, by the first policy that names it."""
    try:
        return ModerationModels(ModerationClassifier.load(settings.moderation_model_path)), ""
    except ModerationModelError as exc:
        log.error("moderation classifier: %s", exc)
        return None, str(exc)


def _canary_transition(telemetry: Telemetry, transition: Transition) -> None:
    """Every rollout transition: a log line, a metric, and an event on the current span
    (the admin request's, for a manual one)."""
    log.warning("canary %s: %s %s (%s) weight %.3f -> %.3f: %s", transition.model, transition.actor,
                transition.kind, transition.rollout, transition.from_weight, transition.to_weight, transition.reason)
    telemetry.metrics.canary_transitions.labels(transition.model, transition.kind, transition.actor).inc()
    trace.get_current_span().add_event("canary." + transition.kind, {
        "switchyard.model": transition.model, "switchyard.canary.actor": transition.actor,
        "switchyard.canary.to_weight": transition.to_weight, "switchyard.canary.reason": transition.reason})


def create_app(settings: Settings, telemetry: Telemetry | None = None) -> Litestar:
    """Build the gateway app. The policy is loaded and the backends opened at start-up.

    A policy that fails to load leaves the app up but not ready: ``/readyz`` answers 503 with
    the reason and requests get 503, rather than the process crash-looping. ``telemetry``
    defaults to tracing from the ``OTEL_*`` variables and access lines to
    ``settings.access_log``.
    """
    own_telemetry = telemetry is None
    telemetry = telemetry or Telemetry.from_env(settings.access_log)
    gateway = Gateway(settings, telemetry)
    scorer, scorer_error = _load_classifier(settings)
    moderation, moderation_error = _load_moderation(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        manager = PolicyManager(gateway, settings, scorer, scorer_error, moderation, moderation_error)
        canaries = CanaryController.create(manager.redis_client, settings.cluster,
                                           on_event=lambda t: _canary_transition(telemetry, t))
        manager.canaries = canaries
        telemetry.metrics.watch_canaries(canaries.weights)
        telemetry.metrics.watch_loop(asyncio.get_running_loop())
        app.state.policies, app.state.canaries = manager, canaries
        # stored responses outlive policy reloads: one store per app, in Redis when there is one
        app.state[RESPONSE_STORE_STATE] = ResponseStore(manager.redis_client)
        try:
            await canaries.start()
            await manager.start()
            yield
        finally:
            await canaries.aclose()
            await manager.aclose()
            if own_telemetry:
                telemetry.shutdown()

    app = Litestar(
        route_handlers=[chat_completions, text_completions, embeddings, list_models, retrieve_model, healthz, readyz, metrics,
                        admin_metrics, admin_usage, get_policy, put_policy, *CANARY_ADMIN_HANDLERS,
                        *MESSAGES_HANDLERS, *RESPONSES_HANDLERS, *CONSOLE_HANDLERS],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[after_send],
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="Switchyard", version="0.1.0"),
        logging_config=None,
    )
    app.state.gateway = gateway
    app.state[PATH_ERRORS_STATE] = dict.fromkeys(MESSAGES_PATHS, anthropic_error_body)
    describe(app.openapi_schema)  # built now, served as completed here
    return app
