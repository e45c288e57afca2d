"""The chart's ServiceMonitor can scrape per-tenant spend from ``/admin/metrics`` with the admin
key (``/metrics`` carries none; docs/observability.md)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_helm_chart import ALL_ON, FULLNAME, find, manifests, render


def _monitor(admin: dict[str, Any]) -> dict[str, Any]:
    values = {**ALL_ON, "serviceMonitor": {**ALL_ON["serviceMonitor"], "adminMetrics": admin}}
    return find(manifests(render(values)), "ServiceMonitor", FULLNAME)


def test_admin_metrics_endpoint_sends_the_admin_key_from_a_secret() -> None:
    monitor = _monitor({"enabled": True, "secretName": "switchyard-admin"})
    public, admin = monitor["spec"]["endpoints"]
    assert public["path"] == "/metrics" and "authorization" not in public
    assert admin["path"] == "/admin/metrics" and admin["port"] == public["port"]
    assert admin["authorization"] == {"type": "Bearer",
                                      "credentials": {"name": "switchyard-admin", "key": "admin-key"}}
    assert admin["interval"] == public["interval"]


def test_admin_metrics_is_off_by_default_and_needs_a_secret() -> None:
    assert [e["path"] for e in _monitor({})["spec"]["endpoints"]] == ["/metrics"]
    with pytest.raises(Exception, match="secretName"):
        _monitor({"enabled": True})
