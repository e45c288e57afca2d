"""Where a pool's workers come from when they are discovered instead of listed.

Two sources, as SGLang's Model Gateway offers them:

* ``dns``: the A/AAAA records of a name (a Kubernetes headless Service gives one per ready pod),
  asked again every ``interval_s``.
* ``kubernetes``: the EndpointSlices of a Service, listed and then watched through the API
  server with the pod's service account; a ready endpoint is a worker.

A source yields the whole current set of worker base URLs each time it changes; the pool
(``backends.pool.WorkerPool``) adds what is new (after its first health check passes) and
drains what left. A failed lookup keeps the last set: a DNS or API outage must not empty a pool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from backends.discovery_config import SERVICE_ACCOUNT, DnsDiscoveryConfig, KubernetesDiscoveryConfig
from backends.dns_query import AAAA, A, DnsError, resolve, system_nameserver

if TYPE_CHECKING:
    import httpx  # imported by the Kubernetes watch itself: the policy document needs only the configs

log = logging.getLogger("switchyard.discovery")

LIST_BYTES = 64 * 1024 * 1024
"""Most bytes of one EndpointSlice list (a Service's slices: kilobytes, a huge one a few MB)."""
EVENT_BYTES = 16 * 1024 * 1024
"""Most bytes of one watch event (one EndpointSlice: at most 1,000 endpoints)."""
LIST_DEADLINE_S = 30.0
"""A list the API server has not answered whole in this time is retried (the watch itself has
no read timeout: it is quiet until something changes)."""


class Discovery(Protocol):
    """A source of a pool's workers."""

    def watch(self) -> AsyncIterator[frozenset[str]]:
        """Yield the current set of worker base URLs, then each changed set, until cancelled."""
        ...


def build_discovery(config: DnsDiscoveryConfig | KubernetesDiscoveryConfig) -> Discovery:
    """The source a policy's ``discovery`` section describes."""
    if isinstance(config, DnsDiscoveryConfig):
        return DnsDiscovery(config)
    return KubernetesDiscovery(config)


def _url(scheme: str, address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}://{host}:{port}"


class DnsDiscovery:
    """Resolve a name every ``interval_s``; yield the workers when the set changes."""

    def __init__(self, config: DnsDiscoveryConfig) -> None:
        self._config = config
        if config.nameserver:
            host, _, port = config.nameserver.rpartition(":") if config.nameserver.count(":") == 1 \
                else (config.nameserver, "", "")
            self._server = (host or config.nameserver, int(port or 53))
        else:
            self._server = system_nameserver()

    async def lookup(self) -> frozenset[str]:
        """One lookup of every record type; raises ``DnsError`` when the server failed."""
        types = (A, AAAA) if self._config.ipv6 else (A,)
        answers = await asyncio.gather(*(resolve(self._config.name, self._server, t, self._config.timeout_s)
                                         for t in types))
        return frozenset(_url(self._config.scheme, address, self._config.port)
                         for addresses in answers for address in addresses)

    async def watch(self) -> AsyncIterator[frozenset[str]]:
        current: frozenset[str] | None = None
        failing = False
        while True:
            try:
                found = await self.lookup()
            except (DnsError, OSError) as exc:
                if not failing:
                    log.warning("discovery: DNS lookup of %s failed (%s); keeping the current workers",
                                self._config.name, exc)
                failing = True
            else:
                failing = False
                if found != current:
                    current = found
                    yield found
            await asyncio.sleep(self._config.interval_s)


class KubernetesDiscovery:
    """List a Service's EndpointSlices, then watch them; yield the ready workers on each change."""

    def __init__(self, config: KubernetesDiscoveryConfig, environ: dict[str, str] | None = None) -> None:
        self._config = config
        env = os.environ if environ is None else environ
        self._api = (config.api_url or f"https://{env.get('KUBERNETES_SERVICE_HOST', 'kubernetes.default.svc')}"
                     f":{env.get('KUBERNETES_SERVICE_PORT', '443')}").rstrip("/")
        self._namespace = config.namespace or _own_namespace()
        self._slices: dict[str, frozenset[str]] = {}

    def _client(self) -> httpx.AsyncClient:
        import httpx

        headers = {"accept": "application/json"}
        token = Path(self._config.token_path)
        if token.exists():
            headers["authorization"] = "Bearer " + token.read_text().strip()
        verify: ssl.SSLContext | bool = True
        if Path(self._config.ca_path).exists():
            verify = ssl.create_default_context(cafile=self._config.ca_path)
        # no read timeout: a watch is quiet until something changes (the server ends it in time)
        return httpx.AsyncClient(base_url=self._api, headers=headers, verify=verify,
                                 timeout=httpx.Timeout(10.0, read=None))

    @property
    def _path(self) -> str:
        return f"/apis/discovery.k8s.io/v1/namespaces/{self._namespace}/endpointslices"

    @property
    def _selector(self) -> str:
        return f"kubernetes.io/service-name={self._config.service}"

    def workers(self) -> frozenset[str]:
        """The ready workers of every slice seen."""
        return frozenset().union(*self._slices.values())

    async def watch(self) -> AsyncIterator[frozenset[str]]:
        import httpx

        current: frozenset[str] | None = None
        while True:
            try:
                async with self._client() as client:
                    version = await self._list(client)
                    if self.workers() != current:
                        current = self.workers()
                        yield current
                    async for _ in self._follow(client, version):
                        if self.workers() != current:
                            current = self.workers()
                            yield current
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.warning("discovery: EndpointSlices of %s/%s: %s; keeping the current workers",
                            self._namespace, self._config.service, exc)
            await asyncio.sleep(self._config.retry_s)

    async def _list(self, client: httpx.AsyncClient) -> str:
        from backends.control_http import control_get

        response = await control_get(client, self._path, params={"labelSelector": self._selector},
                                     deadline=LIST_DEADLINE_S, max_bytes=LIST_BYTES)
        response.raise_for_status()
        body = response.json()
        self._slices = {item["metadata"]["name"]: self._ready(item) for item in body.get("items") or []}
        return str(body["metadata"]["resourceVersion"])

    async def _follow(self, client: httpx.AsyncClient, version: str) -> AsyncIterator[None]:
        """Apply watch events until the server ends the watch (then the caller lists again)."""
        from backends.control_http import bounded_lines

        params = {"labelSelector": self._selector, "watch": "true", "resourceVersion": version,
                  "allowWatchBookmarks": "true"}
        async with client.stream("GET", self._path, params=params, headers={"accept-encoding": "identity"}) as response:
            response.raise_for_status()
            async for line in bounded_lines(response.aiter_bytes(), EVENT_BYTES):
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, item = event["type"], event["object"]
                if kind == "ERROR":  # e.g. 410 Gone: our version is too old; list again
                    raise ValueError(f"watch error {item.get('code')}: {item.get('message')}")
                if kind == "BOOKMARK":
                    continue
                name = item["metadata"]["name"]
                if kind == "DELETED":
                    self._slices.pop(name, None)
                else:
                    self._slices[name] = self._ready(item)
                yield None

    def _ready(self, item: dict[str, Any]) -> frozenset[str]:
        port = self._config.port or _slice_port(item.get("ports") or [], self._config.port_name)
        if port is None:
            return frozenset()
        urls: set[str] = set()
        for endpoint in item.get("endpoints") or []:
            # ready is unset while unknown (treat as ready, as kube-proxy does); a terminating
            # endpoint (not ready, or marked terminating where the Service publishes not-ready
            # addresses) gets no new requests while its streams finish
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            urls.update(_url(self._config.scheme, address, port) for address in endpoint.get("addresses") or [])
        return frozenset(urls)


def _slice_port(ports: list[dict[str, Any]], name: str | None) -> int | None:
    for port in ports:
        if name is None or port.get("name") == name:
            value = port.get("port")
            return int(value) if value is not None else None
    return None


def _own_namespace() -> str:
    try:
        return (SERVICE_ACCOUNT / "namespace").read_text().strip()
    except OSError:
        return "default"
