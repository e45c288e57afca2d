"""The SGLang backend's control routes against the simulator: health, load, capacity, model info."""

from __future__ import annotations

import aiohttp
import httpx
import pytest

from backends.errors import UpstreamUnavailableError
from backends.http import Timeouts
from backends.sglang import SGLangBackend, parse_load
from backends.sim import SimConfig, start_sim


async def test_health_reads_load_and_capacity_and_model_info() -> None:
    sim = await start_sim(SimConfig(model="served-llama", capacity_tokens=12_345, zero_latency=True))
    try:
        async with aiohttp.ClientSession() as session, httpx.AsyncClient() as control:
            backend = SGLangBackend("pool/0", sim.url, session, control, Timeouts(), health_path="/health_generate")
            health = await backend.health()
            assert health.ok and health.capacity_tokens == 12_345
            assert (health.running, health.queued) == (0, 0)
            info = await backend.model_info()
            assert info["model_path"] == "served-llama" and info["is_generation"] is True
    finally:
        await sim.aclose()


async def test_unreachable_worker_is_unhealthy_and_model_info_is_a_typed_error() -> None:
    async with aiohttp.ClientSession() as session, httpx.AsyncClient() as control:
        backend = SGLangBackend("pool/0", "http://127.0.0.1:9", session, control, Timeouts(connect=0.5))
        health = await backend.health()
        assert not health.ok and "unreachable" in health.detail
        with pytest.raises(UpstreamUnavailableError):
            await backend.model_info()


def test_parse_load_sums_sglang_gauges() -> None:
    text = ('# HELP sglang:num_running_reqs x\nsglang:num_running_reqs{model_name="m"} 3.0\n'
            'sglang:num_queue_reqs{model_name="m"} 7.0\nsglang:cache_hit_rate{model_name="m"} 0.5\n')
    assert parse_load(text) == (3, 7)
