"""What a pool's ``discovery`` section says (``dns`` or ``kubernetes``): the policy document's
types, apart from ``backends.discovery``'s sources so reading a policy imports no asyncio,
ssl or DNS code (``switchyard policy check`` starts in under 0.3 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from backends.config import StrictModel

__all__ = ["SERVICE_ACCOUNT", "DiscoveryConfig", "DnsDiscoveryConfig", "KubernetesDiscoveryConfig"]

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class DnsDiscoveryConfig(StrictModel):
    """Workers are the addresses a DNS name resolves to (a headless Service's pods)."""

    type: Literal["dns"]
    name: str
    """The name to resolve, e.g. ``sglang-headless.llm.svc.cluster.local`` (fully qualified:
    no search domains are tried)."""
    port: Annotated[int, Field(ge=1, le=65535)] = 30000
    """The workers' port (A/AAAA records carry none)."""
    scheme: Literal["http", "https"] = "http"
    interval_s: Annotated[float, Field(gt=0)] = 5.0
    """Seconds between lookups: how soon a new or removed pod is seen."""
    nameserver: str | None = None
    """``host`` or ``host:port`` of the DNS server; the first of ``/etc/resolv.conf`` if unset."""
    ipv6: bool = True
    """Also ask for AAAA records."""
    timeout_s: Annotated[float, Field(gt=0)] = 1.0
    """Per query; a lookup that fails keeps the current workers."""


class KubernetesDiscoveryConfig(StrictModel):
    """Workers are the ready endpoints of a Service's EndpointSlices, watched through the API."""

    type: Literal["kubernetes"]
    service: str
    """The Service whose EndpointSlices list the workers."""
    namespace: str | None = None
    """The Service's namespace; the gateway pod's own if unset."""
    port_name: str | None = None
    """The EndpointSlice port to use by name; the first port if unset."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """A fixed port instead of the slice's (e.g. when the Service lists none)."""
    scheme: Literal["http", "https"] = "http"
    api_url: str | None = None
    """The API server; ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` if unset."""
    token_path: str = str(SERVICE_ACCOUNT / "token")
    """The service account token (re-read on every connection: Kubernetes rotates it)."""
    ca_path: str = str(SERVICE_ACCOUNT / "ca.crt")
    """The API server's CA; used when present."""
    retry_s: Annotated[float, Field(gt=0)] = 2.0
    """Wait before listing again after the watch broke."""


DiscoveryConfig = Annotated[DnsDiscoveryConfig | KubernetesDiscoveryConfig, Field(discriminator="type")]
