"""``create_app(settings)``: the Litestar application, with everything built and passed in."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as redis
from litestar import Litestar
from litestar.openapi import OpenAPIConfig

from gateway.accounting import limit_stores, limits_client
from gateway.admin import admin_usage
from gateway.completions import chat_completions, text_completions
from gateway.errors import EXCEPTION_HANDLERS
from gateway.probes import healthz, list_models, readyz
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.state import Gateway
from policies.loader import PolicyError, load_policy
from router.difficulty import ClassifierError, DifficultyClassifier

log = logging.getLogger("switchyard.gateway")


def _load_classifier(settings: Settings) -> tuple[DifficultyClassifier | None, str]:
    """The process's one classifier session, opened at start-up; its error if it cannot be."""
    try:
        return DifficultyClassifier.load(settings.classifier_path), ""
    except ClassifierError as exc:
        log.error("%s", exc.message)
        return None, exc.message


def create_app(settings: Settings) -> Litestar:
    """Build the gateway app. The policy is loaded and the backends opened at start-up.

    A policy that fails to load leaves the app up but not ready: ``/readyz`` answers 503 with
    the reason and requests get 503, rather than the process crash-looping.
    """
    gateway = Gateway(settings)
    scorer, scorer_error = _load_classifier(settings)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        redis_client = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None
        limits_redis: redis.Redis | None = None
        try:
            policy = load_policy(settings.policy_path)
            if settings.redis_url:
                limits_redis = limits_client(settings.redis_url, policy.limits)
            runtime = Runtime.build(policy, max_connections=settings.max_connections_per_backend,
                                    redis_client=redis_client, scorer=scorer, scorer_error=scorer_error,
                                    limit_stores=limit_stores(limits_redis, policy.limits))
        except PolicyError as exc:
            gateway.load_error = exc.message
            log.error("%s", exc.message)
        else:
            await runtime.start()
            gateway.swap(runtime)
            log.info("policy %s loaded: %s", runtime.policy.version, runtime.readiness().detail)
        try:
            yield
        finally:
            if gateway.has_runtime:
                await gateway.runtime.aclose()
            for client in (redis_client, limits_redis):
                if client is not None:
                    await client.aclose()

    app = Litestar(
        route_handlers=[chat_completions, text_completions, list_models, healthz, readyz, admin_usage],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="Switchyard", version="0.1.0"),
        logging_config=None,
    )
    app.state.gateway = gateway
    return app
