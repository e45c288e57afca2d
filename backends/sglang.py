"""A backend for one SGLang worker: OpenAI-compatible traffic plus SGLang's own control routes.

What a worker can report depends on its launch flags (SGLang 0.5.23, checked against its code):
``cached_tokens`` only with ``--enable-cache-report``, ``/metrics`` only with
``--enable-metrics`` (both off by default), ``/v1/loads`` always. With ``--api-key`` every route
but the health checks needs the key. The backend learns the flags from ``/server_info`` and says
what the worker does not report (``Health.reports_cached_tokens``, ``Health.load_source``, one
warning per worker) instead of reading zero in silence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import httpx
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from backends.control_http import ControlResponse, control_get
from backends.errors import UpstreamUnavailableError
from backends.http import Timeouts
from backends.openai_compat import OpenAICompatBackend
from backends.types import Health

log = logging.getLogger("switchyard.sglang")

LoadSource = Literal["metrics", "loads", "none"]

# Gauges read from /metrics; a worker serves one model but may label per DP/TP rank.
_RUNNING = "sglang:num_running_reqs"
_QUEUED = "sglang:num_queue_reqs"
_LOAD_FAMILIES = (_RUNNING, _QUEUED)


def _family_lines(metrics_text: str) -> str:
    """Only the lines of the two load gauges (their ``# HELP``/``# TYPE`` and samples).

    A real worker's exposition is ~50 KB (hundreds of series and histograms): parsing all of it
    every probe interval costs ~30 ms of event loop per worker, the two families well under 1.
    This only picks lines; prometheus-client's parser reads them.
    """
    return "".join(line + "\n" for line in metrics_text.splitlines() if _is_load_line(line))


def _is_load_line(line: str) -> bool:
    name = line[7:] if line.startswith(("# HELP ", "# TYPE ")) else line
    return any(name.startswith(family) and name[len(family):len(family) + 1] in ("{", " ")
               for family in _LOAD_FAMILIES)


def _gauge_total(samples: list[tuple[dict[str, str], float]]) -> float:
    """One gauge's value for the whole worker, each request counted once.

    With ``--enable-priority-scheduling`` SGLang writes the total under ``priority=""`` and a
    breakdown under ``priority="<n>"``: take the totals (summed over DP ranks), or the breakdown
    when a worker sends no total.
    """
    totals = [value for labels, value in samples if not labels.get("priority")]
    if totals:
        return sum(totals)
    return sum(value for _, value in samples)


def parse_load(metrics_text: str) -> tuple[int, int]:
    """(running, queued) from SGLang's Prometheus text; 0 for a gauge it does not report.

    Raises:
        ValueError: the text is not Prometheus exposition format.
    """
    samples: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in _LOAD_FAMILIES}
    for family in text_string_to_metric_families(_family_lines(metrics_text)):
        for sample in family.samples:
            if sample.name in samples:
                samples[sample.name].append((sample.labels, sample.value))
    return int(_gauge_total(samples[_RUNNING])), int(_gauge_total(samples[_QUEUED]))


class _RankLoad(msgspec.Struct):
    """One DP rank of ``/v1/loads`` (SGLang's ``LoadSnapshot``): the two fields read."""

    num_running_reqs: int = 0
    num_waiting_reqs: int = 0


class _Loads(msgspec.Struct):
    loads: list[_RankLoad]


_LOADS = msgspec.json.Decoder(_Loads)


def parse_loads(raw: bytes) -> tuple[int, int]:
    """(running, queued) from a ``/v1/loads`` body: the sum over its DP ranks.

    Raises:
        msgspec.DecodeError: the body does not have the shape of ``/v1/loads``.
    """
    ranks = _LOADS.decode(raw).loads
    return sum(r.num_running_reqs for r in ranks), sum(r.num_waiting_reqs for r in ranks)


def capabilities(health: Health) -> list[tuple[str, bool]]:
    """(capability, reported) pairs a health check established, for the metric and ``/readyz``.

    ``cached_tokens`` (``--enable-cache-report``), ``metrics`` (``--enable-metrics``: load from
    ``/metrics``) and ``load`` (from ``/metrics`` or ``/v1/loads``). Empty for a remote with no
    such notion (provider APIs) or not reached yet.
    """
    known: list[tuple[str, bool]] = []
    if health.reports_cached_tokens is not None:
        known.append(("cached_tokens", health.reports_cached_tokens))
    if health.load_source is not None:
        known += [("metrics", health.load_source == "metrics"), ("load", health.load_source != "none")]
    return known


_GAPS = {
    "cached_tokens": "no cached tokens (start it with --enable-cache-report): cached tokens and "
                     "their discount read 0",
    "metrics": "no /metrics (start it with --enable-metrics): load read from /v1/loads",
    "load": "no load (neither /metrics nor /v1/loads answered): its queue reads 0",
}


def capability_gaps(health: Health) -> list[str]:
    """What the worker does not report, each with its remedy, for ``/readyz`` and the log."""
    missing = {name for name, reported in capabilities(health) if not reported}
    if "load" in missing:
        missing.discard("metrics")  # one cause, said once
    return [_GAPS[name] for name in _GAPS if name in missing]


@dataclass(frozen=True, slots=True)
class _ServerInfo:
    """What ``/server_info`` says about a worker's launch."""

    capacity_tokens: int = 0
    cache_report: bool | None = None
    metrics: bool | None = None

    @classmethod
    def parse(cls, body: Any) -> _ServerInfo:
        if not isinstance(body, dict):
            return cls()
        capacity = body.get("max_total_num_tokens", 0)

        def flag(name: str) -> bool | None:
            value = body.get(name)
            return value if isinstance(value, bool) else None

        return cls(capacity if isinstance(capacity, int) else 0,
                   flag("enable_cache_report"), flag("enable_metrics"))


class SGLangBackend(OpenAICompatBackend):
    """One SGLang worker (``python -m sglang.launch_server``) reached over HTTP.

    Traffic goes to its OpenAI-compatible routes. Health is ``GET /health`` (or
    ``/health_generate``, which runs a one-token generation and so also catches a wedged
    scheduler; neither needs the key), then the worker's own load from ``/metrics``, or from
    ``/v1/loads`` where ``/metrics`` is off. ``/server_info`` gives the KV-cache capacity and
    the flags; it is read again after the worker was unreachable (it may have restarted with
    other flags). Every probe but health carries the worker's key.
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
        self._probe_headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._info: _ServerInfo | None = None
        self._has_metrics: bool | None = None
        """False once ``/metrics`` answered 404; None until known."""
        self._warned: frozenset[str] = frozenset()
        self._info_refused = False

    async def health(self) -> Health:
        try:
            probe = await control_get(self._control, self.base_url + self._health_path,
                                      deadline=self._timeouts.first_byte, max_bytes=self._timeouts.max_body_bytes)
        except httpx.HTTPError as exc:
            self._forget()
            return Health(ok=False, detail=f"unreachable ({type(exc).__name__})")
        if probe.status_code != 200:
            self._forget()
            return Health(ok=False, detail=f"{self._health_path} answered HTTP {probe.status_code}")
        if self._info is None:
            self._info = await self._read_server_info()
            if self._info is not None:
                self._has_metrics = self._info.metrics
        info = self._info or _ServerInfo()
        running, queued, source = await self._read_load()
        health = Health(ok=True, detail="ok", running=running, queued=queued,
                        capacity_tokens=info.capacity_tokens,
                        reports_cached_tokens=info.cache_report, load_source=source)
        self._warn_once(health)
        return health

    def _forget(self) -> None:
        """The worker is gone for now; when it is back it may run with other flags."""
        self._info = None
        self._has_metrics = None

    def _warn_once(self, health: Health) -> None:
        """Log what the worker does not report when that changes, not every interval."""
        gaps = capability_gaps(health)
        if frozenset(gaps) != self._warned:
            self._warned = frozenset(gaps)
            for gap in gaps:
                log.warning("SGLang worker %s (%s) reports %s", self.name, self.base_url, gap)

    async def _get(self, path: str) -> ControlResponse:
        return await control_get(self._control, self.base_url + path, headers=self._probe_headers,
                                 deadline=self._timeouts.connect, max_bytes=self._timeouts.max_body_bytes)

    async def _get_current(self, path: str, deprecated: str) -> ControlResponse:
        """``path``, or its deprecated alias on an older worker that answers 404."""
        response = await self._get(path)
        if response.status_code == 404:
            response = await self._get(deprecated)
        return response

    async def _read_server_info(self) -> _ServerInfo | None:
        """Capacity and flags from ``/server_info``; None to ask again at the next probe.

        A worker with neither route (404) or an unreadable body gets unknowns for good; a
        refusal (401: wrong key), a server error or a timeout is asked again.
        """
        try:
            response = await self._get_current("/server_info", "/get_server_info")
        except httpx.HTTPError:
            return None
        if response.status_code == 404:
            return _ServerInfo()
        if response.status_code != 200:
            if not self._info_refused:
                self._info_refused = True
                log.warning("SGLang worker %s: /server_info answered HTTP %s (is its api_key "
                            "the worker's --api-key?)", self.name, response.status_code)
            return None
        try:
            return _ServerInfo.parse(response.json())
        except ValueError:
            return _ServerInfo()

    async def _read_load(self) -> tuple[int, int, LoadSource]:
        """(running, queued, source): ``/metrics`` unless known to be off, then ``/v1/loads``."""
        if self._has_metrics is not False:
            try:
                scrape = await self._get("/metrics")
                if scrape.status_code == 200:
                    running, queued = parse_load(scrape.text)
                    self._has_metrics = True
                    return running, queued, "metrics"
                if scrape.status_code == 404:
                    self._has_metrics = False  # --enable-metrics is off: stop asking
            except (httpx.HTTPError, ValueError):
                pass
        try:
            response = await self._get("/v1/loads")
            if response.status_code == 200:
                running, queued = parse_loads(response.content)
                return running, queued, "loads"
        except (httpx.HTTPError, msgspec.DecodeError):
            pass
        return 0, 0, "none"

    async def model_info(self) -> dict[str, Any]:
        """``GET /model_info`` (``/get_model_info`` on older workers): the model it serves."""
        try:
            response = await self._get_current("/model_info", "/get_model_info")
            response.raise_for_status()
            info: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise UpstreamUnavailableError(f"{self.name}: /model_info failed") from exc
        return info
