"""The control routes of a simulated SGLang worker, in SGLang 0.5.23's shapes.

``/server_info``, ``/model_info`` (and their deprecated aliases), ``/v1/loads`` and, only with
``enable_metrics``, ``/metrics``. The shapes follow the fixtures generated from SGLang's own code
(``tests/contracts/sglang/fixtures/control/``; a contract test checks that every key, metric
family and label name the sim emits is one SGLang emits, with the same type). They are a subset
(a real ``/server_info`` has ~500 keys): what a router or an operator reads.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

from backends.sim.config import SimConfig
from backends.sim.engine import SimEngine

SGLANG_VERSION = "0.5.23"
"""The SGLang release whose shapes the sim serves."""

UNAUTHORIZED: dict[str, str] = {"error": "Unauthorized"}
"""The 401 body of SGLang's API-key middleware (every route but ``/health*``, ``/metrics``)."""

_STARTED = time.time()
_DEFAULT_PRIORITY = "0"  # --default-priority-value 0: requests that name none


def _launch_flags(config: SimConfig) -> dict[str, Any]:
    """The server args the sim's knobs stand for, under SGLang's names."""
    return {
        "model_path": config.model,
        "tokenizer_path": config.model,
        "served_model_name": config.model,
        "host": config.host,
        "port": config.port,
        "api_key": config.api_key,  # SGLang echoes it here too: never log this body
        "enable_metrics": config.enable_metrics,
        "enable_cache_report": config.enable_cache_report,
        "enable_priority_scheduling": config.enable_priority_scheduling,
        "default_priority_value": 0 if config.enable_priority_scheduling else None,
        "max_running_requests": config.max_running,
        "random_seed": config.seed,
        "dp_size": 1,
        "tp_size": 1,
    }


def _launch_command(flags: dict[str, Any]) -> str:
    words = ["python3 -m sglang.launch_server"]
    for name in ("model_path", "served_model_name", "host", "port"):
        words += ["--" + name.replace("_", "-"), shlex.quote(str(flags[name]))]
    words += ["--" + name.replace("_", "-") for name in
              ("enable_metrics", "enable_cache_report", "enable_priority_scheduling") if flags[name]]
    return " ".join(words)


def server_info(config: SimConfig) -> dict[str, Any]:
    """``GET /server_info``: server args flat at the top level, then the scheduler's info."""
    flags = _launch_flags(config)
    internal = {**flags, "world_size": 1, "startup_time": _STARTED,
                "effective_max_running_requests_per_dp": config.max_running,
                "last_gen_throughput": 0.0}
    return {
        **flags,
        "launch_command": _launch_command(flags),
        "status": "ready",
        "max_total_num_tokens": config.capacity_tokens,
        "max_req_input_len": max(config.capacity_tokens - 6, 0),
        "startup_time": _STARTED,
        "kv_events": None,
        "internal_states": [internal],
        "version": SGLANG_VERSION,
        "frontend": "python",
    }


def model_info(config: SimConfig) -> dict[str, Any]:
    """``GET /model_info``: every key SGLang's handler writes."""
    return {"model_path": config.model, "served_model_name": config.model,
            "tokenizer_path": config.model, "is_generation": not config.is_embedding,
            "preferred_sampling_params": None, "weight_version": "default", "load_format": "auto",
            "reasoning_parser": "qwen3", "tool_call_parser": "qwen25",
            "disaggregation_mode": "null", "has_image_understanding": False,
            "has_audio_understanding": False, "model_type": "sim", "architectures": ["SimForCausalLM"]}


def loads(config: SimConfig, engine: SimEngine) -> dict[str, Any]:
    """``GET /v1/loads``: one DP rank, core fields only (no GPU, so no ``memory`` section)."""
    stats, used = engine.stats, engine.cache.total_tokens
    capacity = config.capacity_tokens
    rank = {
        "timestamp": time.time(), "dp_rank": 0,
        "num_running_reqs": stats.running, "num_waiting_reqs": stats.queued,
        "num_waiting_uncached_tokens": 0, "num_used_tokens": used, "num_total_tokens": used,
        "num_active_tokens": used, "num_prealloc_ready_tokens": 0,
        "max_total_num_tokens": capacity, "max_running_requests": config.max_running,
        "token_usage": used / capacity if capacity else 0.0, "gen_throughput": 0.0,
        "cache_hit_rate": stats.cache_hit_rate,
        "utilization": stats.running / config.max_running if config.max_running else 0.0,
        "total_prefill_uncached_tokens": stats.prompt_tokens - stats.cached_tokens,
        "total_prefill_busy_us": 0, "decode_moments": None,
    }
    return {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "version": SGLANG_VERSION, "accelerator": None, "num_accelerators": 1, "loads": [rank]}


def _labels(pairs: dict[str, str]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in sorted(pairs.items())) + "}"


def prometheus(config: SimConfig, engine: SimEngine) -> str:
    """``GET /metrics`` (only with ``enable_metrics``): SGLang's families, types and labels.

    Scheduler gauges carry SGLang's scheduler labels; with ``enable_priority_scheduling`` each
    gets ``priority=""`` and the two queue gauges add the per-priority series (every simulated
    request has the default priority), as SGLang's collector writes them.
    """
    stats, used = engine.stats, engine.cache.total_tokens
    base = {"model_name": config.model, "engine_type": "unified"}
    scheduler = {**base, "tp_rank": "0", "pp_rank": "0", "moe_ep_rank": "0"}
    if config.enable_priority_scheduling:
        scheduler["priority"] = ""
        base = {**base, "priority": ""}
    usage = used / config.capacity_tokens if config.capacity_tokens else 0.0
    gauges = [
        ("cache_hit_rate", "The prefix cache hit rate.", stats.cache_hit_rate, False),
        ("num_queue_reqs", "The number of requests in the waiting queue.", stats.queued, True),
        ("num_running_reqs", "The number of running requests.", stats.running, True),
        ("num_used_tokens", "The number of used tokens.", used, False),
        ("token_usage", "The token usage.", usage, False),
    ]
    cached_help = "Number of cached prompt tokens by source (device/host/storage)."
    lines = [f"# HELP sglang:cached_tokens_total {cached_help}",
             "# TYPE sglang:cached_tokens_total counter"]
    if stats.cached_tokens:
        series = _labels({**base, "cache_source": "device"})
        lines.append(f"sglang:cached_tokens_total{series} {float(stats.cached_tokens)}")
    for name, help_text, value, by_priority in gauges:
        lines += [f"# HELP sglang:{name} {help_text}", f"# TYPE sglang:{name} gauge",
                  f"sglang:{name}{_labels(scheduler)} {float(value)}"]
        if by_priority and config.enable_priority_scheduling:
            breakdown = _labels({**scheduler, "priority": _DEFAULT_PRIORITY})
            lines.append(f"sglang:{name}{breakdown} {float(value)}")
    return "\n".join(lines) + "\n"
