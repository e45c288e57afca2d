"""``create_app(settings)``: the Litestar application, with everything built and passed in."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.openapi import OpenAPIConfig

from gateway.admin import admin_usage, get_policy, put_policy
from gateway.completions import chat_completions, text_completions
from gateway.errors import EXCEPTION_HANDLERS
from gateway.policy_manager import PolicyManager
from gateway.probes import healthz, list_models, metrics, readyz
from gateway.settings import Settings
from gateway.state import Gateway
from gateway.telemetry import Telemetry
from policies.moderation import ModerationClassifier, ModerationModelError
from router.difficulty import ClassifierError, DifficultyClassifier

log = logging.getLogger("switchyard.gateway")


def _load_classifier(settings: Settings) -> tuple[DifficultyClassifier | None, str]:
    """The process's one classifier session, opened at start-up; its error if it cannot be."""
    try:
        return DifficultyClassifier.load(settings.classifier_path), ""
    except ClassifierError as exc:
        log.error("%s", exc.message)
        return None, exc.message


def _load_moderation(settings: Settings) -> tuple[ModerationClassifier | None, str]:
    """The process's moderation classifier; its error if it cannot be loaded (policies that
    moderate categories are then refused with that reason)."""
    try:
        return ModerationClassifier.load(settings.moderation_model_path), ""
    except ModerationModelError as exc:
        log.error("moderation classifier: %s", exc)
        return None, str(exc)


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
        app.state.policies = manager
        try:
            await manager.start()
            yield
        finally:
            await manager.aclose()
            if own_telemetry:
                telemetry.shutdown()

    app = Litestar(
        route_handlers=[chat_completions, text_completions, list_models, healthz, readyz, metrics,
                        admin_usage, get_policy, put_policy],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="Switchyard", version="0.1.0"),
        logging_config=None,
    )
    app.state.gateway = gateway
    return app
