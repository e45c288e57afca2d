"""A backend for one SGLang worker: OpenAI-compatible traffic plus SGLang's own control routes."""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx

from backends.errors import UpstreamUnavailableError
from backends.http import Timeouts
from backends.openai_compat import OpenAICompatBackend
from backends.types import Health

# Gauges read from /metrics; SGLang labels them (model_name=...), a worker serves one model.
_RUNNING = "sglang:num_running_reqs"
_QUEUED = "sglang:num_queue_reqs"


def parse_load(metrics_text: str) -> tuple[int, int]:
    """(running, queued) from SGLang's Prometheus text; 0 for a gauge it does not report."""
    running = queued = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(_RUNNING):
            running += float(line.rsplit(" ", 1)[-1])
        elif line.startswith(_QUEUED):
            queued += float(line.rsplit(" ", 1)[-1])
    return int(running), int(queued)


class SGLangBackend(OpenAICompatBackend):
    """One SGLang worker (``python -m sglang.launch_server``) reached over HTTP.

    Traffic goes to its OpenAI-compatible routes, which report
    ``usage.prompt_tokens_details.cached_tokens`` from the RadixAttention cache. Health is
    ``GET /health`` (or ``/health_generate``, which runs a one-token generation and so also
    catches a wedged scheduler) plus a scrape of ``/metrics`` for the worker's own load.
    """

    kind = "sglang"

    def __init__(
        self,
        name: str,
        base_url: str,
        session: aiohttp.ClientSession,
        control: httpx.AsyncClient,
        timeouts: Timeouts,
        api_key: str | None = None,
        *,
        health_path: str = "/health",
    ) -> None:
        super().__init__(name, base_url, session, control, timeouts, api_key)
        self._health_path = health_path
        self._capacity_tokens = 0

    async def health(self) -> Health:
        try:
            probe = await self._control.get(
                self.base_url + self._health_path, timeout=self._timeouts.first_byte
            )
            if probe.status_code != 200:
                return Health(ok=False, detail=f"{self._health_path} answered HTTP {probe.status_code}")
            scrape = await self._control.get(self.base_url + "/metrics", timeout=self._timeouts.connect)
        except httpx.HTTPError as exc:
            return Health(ok=False, detail=f"unreachable ({type(exc).__name__})")
        if not self._capacity_tokens:
            self._capacity_tokens = await self._read_capacity()
        if scrape.status_code != 200:
            # metrics are optional (--enable-metrics); a healthy worker without them is still healthy
            return Health(ok=True, detail="no /metrics", capacity_tokens=self._capacity_tokens)
        running, queued = parse_load(scrape.text)
        return Health(ok=True, detail="ok", running=running, queued=queued,
                      capacity_tokens=self._capacity_tokens)

    async def _read_capacity(self) -> int:
        """KV-cache size in tokens from ``/get_server_info``; 0 if the worker does not say."""
        try:
            response = await self._control.get(self.base_url + "/get_server_info",
                                               timeout=self._timeouts.connect)
            value = response.json().get("max_total_num_tokens", 0) if response.status_code == 200 else 0
        except (httpx.HTTPError, ValueError, AttributeError):
            return 0
        return int(value) if isinstance(value, int) else 0

    async def model_info(self) -> dict[str, Any]:
        """``GET /get_model_info``: the model path the worker serves."""
        try:
            response = await self._control.get(
                self.base_url + "/get_model_info", timeout=self._timeouts.connect
            )
            response.raise_for_status()
            info: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise UpstreamUnavailableError(f"{self.name}: /get_model_info failed") from exc
        return info
