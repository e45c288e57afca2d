"""No client can grow ``/metrics`` or stall the gateway through it (issue 15, finding 1).

One valid key sending requests whose ``model`` is a fresh random string each time used to add
a series per name to every model-labelled metric (100 names of 1 MB: a 1.96 GB exposition and
a 23 s stall of the event loop per scrape). Unknown names are now counted as ``other`` and the
exposition is rendered in a worker thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.local_stack import DEMO_KEY, LOCAL_MODEL, TEAM_B_KEY
from tests.conftest import ThreadedStack

FLOOD = 200
NAME_BYTES = 10_000
MAX_GROWTH_BYTES = 8_000
"""What the flood may add to the exposition: the ``other`` series of a few metrics."""
MAX_EXPOSITION_BYTES = 256_000
SCRAPE_S = 0.5
PROBE_S = 2.0
"""Bound on a probe request of another tenant during the flood (loose for a shared 2-core
machine; a scrape rendered on the event loop stalled it for seconds)."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    threaded = ThreadedStack(tmp_path_factory.mktemp("bounds"))
    yield threaded
    threaded.close()


def _flood(url: str, stop: threading.Event) -> int:
    """``FLOOD`` requests with random 10 kB model names, eight at a time; returns how many 404."""
    def one(_: int) -> int:
        name = os.urandom(NAME_BYTES // 2).hex()
        response = httpx.post(url + "/v1/chat/completions", timeout=30,
                              headers={"authorization": f"Bearer {DEMO_KEY}"},
                              json={"model": name, "messages": [{"role": "user", "content": "x"}]})
        return response.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(FLOOD)))
    stop.set()
    return statuses.count(404)


def _scrape_while(url: str, stop: threading.Event) -> None:
    while not stop.is_set():
        httpx.get(url + "/metrics", timeout=60)


def test_random_model_names_neither_grow_metrics_nor_stall_other_tenants(stack: ThreadedStack) -> None:
    url = stack.url
    probe = {"model": LOCAL_MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "probe"}]}
    team_b = {"authorization": f"Bearer {TEAM_B_KEY}"}
    assert httpx.post(url + "/v1/chat/completions", json=probe, headers=team_b, timeout=30).status_code == 200
    before = httpx.get(url + "/metrics").content

    stop = threading.Event()
    scraper = threading.Thread(target=_scrape_while, args=(url, stop), daemon=True)
    scraper.start()
    with ThreadPoolExecutor(1) as runner:
        flooded = runner.submit(_flood, url, stop)
        latencies = []
        while not stop.is_set():
            started = time.perf_counter()
            answer = httpx.post(url + "/v1/chat/completions", json=probe, headers=team_b, timeout=30)
            latencies.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
        assert flooded.result() == FLOOD
    scraper.join(60)
    assert latencies and max(latencies) < PROBE_S, latencies

    timings = []
    for _ in range(3):
        started = time.perf_counter()
        after = httpx.get(url + "/metrics").content
        timings.append(time.perf_counter() - started)
    assert min(timings) < SCRAPE_S, timings
    assert len(after) < MAX_EXPOSITION_BYTES and len(after) - len(before) < MAX_GROWTH_BYTES, (len(before), len(after))
    requests = [s for f in text_string_to_metric_families(after.decode()) for s in f.samples
                if s.name == "switchyard_requests_total" and s.labels["code"] == "model_not_found"]
    assert [(s.labels["model"], s.value) for s in requests] == [("other", FLOOD)]


def test_a_model_of_the_policy_keeps_its_own_label_when_refused(stack: ThreadedStack) -> None:
    """Collapsing unknown names must not hide the known ones: a 403 on a real model is counted
    under that model."""
    response = httpx.post(stack.url + "/v1/chat/completions", timeout=30,
                          headers={"authorization": f"Bearer {TEAM_B_KEY}"},
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 403
    text = httpx.get(stack.url + "/metrics").text
    assert [s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "switchyard_requests_total" and s.labels["model"] == "gpt-4o-mini"
            and s.labels["status"] == "403"] == [1.0]
