"""``create_app(settings)``: the Litestar application, with everything built and passed in."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as redis
from litestar import Litestar
from litestar.openapi import OpenAPIConfig

from gateway.completions import chat_completions, text_completions
from gateway.errors import EXCEPTION_HANDLERS
from gateway.probes import healthz, list_models, readyz
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.state import Gateway
from policies.loader import PolicyError, load_policy

log = logging.getLogger("switchyard.gateway")


def create_app(settings: Settings) -> Litestar:
    """Build the gateway app. The policy is loaded and the backends opened at start-up.

    A policy that fails to load leaves the app up but not ready: ``/readyz`` answers 503 with
    the reason and requests get 503, rather than the process crash-looping.
    """
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        redis_client = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None
        try:
            runtime = Runtime.build(load_policy(settings.policy_path),
                                    max_connections=settings.max_connections_per_backend,
                                    redis_client=redis_client)
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
            if redis_client is not None:
                await redis_client.aclose()

    app = Litestar(
        route_handlers=[chat_completions, text_completions, list_models, healthz, readyz],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="Switchyard", version="0.1.0"),
        logging_config=None,
    )
    app.state.gateway = gateway
    return app
