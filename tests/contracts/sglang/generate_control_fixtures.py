"""Write SGLang 0.5.23's control-plane answers into ``fixtures/control/`` from SGLang's own code.

Usage (the wheel is never edited; nothing of SGLang is imported outside this process)::

    pip download --no-deps sglang==0.5.23 -d /tmp/sgl && cd /tmp/sgl && unzip -q sglang-*.whl -d src
    .venv/bin/python tests/contracts/sglang/generate_control_fixtures.py /tmp/sgl/src

What comes from SGLang's code, and how:

* ``/metrics``: SGLang's ``SchedulerMetricsCollector`` and ``TokenizerMetricsCollector``
  (``observability/metrics_collector.py``) instantiated with prometheus-client on a private
  registry, fed through their own ``log_stats`` / ``QueueCount`` paths and rendered by
  ``generate_latest``, once with the labels a plain launch gets and once with
  ``--enable-priority-scheduling`` (``priority=""`` total plus one series per priority).
* ``/v1/loads``: ``LoadSnapshot.to_dict`` (``managers/load_snapshot.py``) in the envelope of
  ``entrypoints/v1_loads.py``, core-only and with every optional section on two DP ranks.
* ``/server_info``: the defaults of every field of the ``arg_groups/fields`` namespaces (the
  flat ``ServerArgs.resolved_dict()``), the launch flags applied, and the scheduler's handshake
  info (``max_total_num_tokens`` lives there, not in the server args), in the envelope of
  ``http_server.server_info``. Values SGLang resolves from the GPU are set in ``_RESOLVED``.
* ``/model_info``: the keys of ``http_server.model_info`` for a Qwen2 chat model.
* ``auth.json``: ``utils/auth.decide_request_auth`` asked, for every probe path, whether a
  worker started with ``--api-key`` lets it through without the key, and the 401 body of
  ``add_api_key_middleware``.

SGLang's package ``__init__`` modules and anything needing torch or a GPU are replaced by
permissive stubs in ``sys.modules`` (see ``_StubFinder``); only the files named in ``_REAL``
run for real. Fixtures are Apache-2.0, generated from SGLang (https://github.com/sgl-project/sglang).
"""

from __future__ import annotations

import argparse
import enum
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "fixtures" / "control"
SGLANG_VERSION = "0.5.23"
TIMESTAMP = "2026-01-01T00:00:00+00:00"  # fixed: fixtures must not change between runs
STARTUP_TIME = 1767225600.0

_REAL = (
    "sglang.srt.arg_groups.arg_utils",
    "sglang.srt.arg_groups.field_order",
    "sglang.srt.arg_groups.fields.",
    "sglang.srt.observability.metrics_collector",
    "sglang.srt.observability.utils",
    "sglang.srt.utils.gauge_histogram",
    "sglang.srt.managers.load_snapshot",
    "sglang.srt.utils.auth",
)
"""Modules executed from the wheel (a trailing dot: every module of that package)."""

_STUBBED_TOP = ("sglang", "torch", "triton", "zmq")

MODEL_PATH = "Qwen/Qwen2.5-7B-Instruct"
SERVED_NAME = "qwen-7b"
API_KEY = "sk-sglang-fixture"
MAX_TOTAL_NUM_TOKENS = 862_315
MAX_RUNNING_REQUESTS = 2048

_RESOLVED: dict[str, Any] = {
    # what resolution derives from the model and the GPU on an H100 80GB, TP 1
    "tokenizer_path": MODEL_PATH,
    "mem_fraction_static": 0.841,
    "max_running_requests": MAX_RUNNING_REQUESTS,
    "chunked_prefill_size": 8192,
    "cuda_graph_max_bs": 256,
    "attention_backend": "fa3",
    "sampling_backend": "flashinfer",
    "grammar_backend": "xgrammar",
    "device": "cuda",
}

LAUNCHES: dict[str, dict[str, Any]] = {
    "default": {},
    "enabled": {"enable_metrics": True, "enable_cache_report": True},
    "priority": {"enable_metrics": True, "enable_cache_report": True,
                 "enable_priority_scheduling": True, "default_priority_value": 0},
}
"""Launch flags beyond ``--model-path``/``--served-model-name``/``--host``/``--port``."""


# -- importing parts of SGLang without torch -----------------------------------------------------


class _AnyMeta(type):
    """Any attribute, item or call of a stub class is another stub."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _stub_class(name)

    def __getitem__(cls, item: Any) -> Any:
        return cls

    def __or__(cls, other: Any) -> Any:
        return cls

    __ror__ = __or__

    def __iter__(cls) -> Any:  # iterating a stub yields nothing (not __getitem__ forever)
        return iter(())


class _Any(metaclass=_AnyMeta):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _Any()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Any()

    def __bool__(self) -> bool:
        return False

    def __iter__(self) -> Any:
        return iter(())


def _stub_class(name: str) -> type:
    return _AnyMeta(name, (_Any,), {})


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _stub_class(name)
        setattr(self, name, value)
        return value


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serve SGLang from the unpacked wheel: packages without their ``__init__`` code, the
    ``_REAL`` modules from their files, every other SGLang (or torch) module as a stub."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if fullname.split(".")[0] not in _STUBBED_TOP:
            return None
        where = self.root.joinpath(*fullname.split("."))
        if fullname.startswith("sglang") and where.is_dir():
            spec = importlib.machinery.ModuleSpec(fullname, self, is_package=True)
            spec.submodule_search_locations = [str(where)]
            return spec
        if any(fullname == r or (r.endswith(".") and fullname.startswith(r)) for r in _REAL):
            return importlib.util.spec_from_file_location(fullname, where.with_suffix(".py"))
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StubModule(spec.name)
        if spec.submodule_search_locations is not None:
            module.__path__ = list(spec.submodule_search_locations)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing runs: a stub or a package whose ``__init__`` is skipped."""


def install(root: Path) -> None:
    """Make ``import sglang...`` resolve against the wheel at ``root``."""
    if not (root / "sglang" / "srt" / "observability" / "metrics_collector.py").is_file():
        raise SystemExit(f"{root} is not an unpacked sglang wheel (expected sglang/srt/...)")
    sys.meta_path.insert(0, _StubFinder(root))


def _namespaces() -> dict[str, Any]:
    """Each config namespace class of ``arg_groups/fields`` by its ``_NS_PATH``."""
    import msgspec

    fields_dir = Path(importlib.import_module("sglang.srt.arg_groups.fields").__path__[0])
    found: dict[str, Any] = {}
    for file in sorted(fields_dir.glob("*.py")):
        if file.stem == "__init__":
            continue
        module = importlib.import_module(f"sglang.srt.arg_groups.fields.{file.stem}")
        for cls in vars(module).values():
            if isinstance(cls, type) and issubclass(cls, msgspec.Struct) and "_NS_PATH" in vars(cls):
                found[vars(cls)["_NS_PATH"]] = cls
    return found


def use_runtime_context(flags: dict[str, Any]) -> None:
    """Serve ``runtime_context.get_<namespace>()`` as the real namespace records at their
    defaults with ``flags`` applied: what a launched worker's collectors read."""
    context = importlib.import_module("sglang.srt.runtime_context")
    launch = {"model_path": MODEL_PATH, "served_model_name": SERVED_NAME, **flags}
    for path, cls in _namespaces().items():
        names = set(cls.__struct_fields__)
        _CONTEXT[path] = cls(**{k: v for k, v in launch.items() if k in names})
        # bound by name at import time, so the getter reads the record current at each call
        setattr(context, "get_" + path.replace(".", "_"), lambda path=path: _CONTEXT[path])


_CONTEXT: dict[str, Any] = {}
_ROOT: list[Path] = []


# -- /metrics ----------------------------------------------------------------------------------


def render_metrics(*, priority: bool) -> str:
    """Prometheus text of a worker with 3 running and 4 queued requests, by SGLang's collectors.

    SGLang serves ``/metrics`` in prometheus-client's multiprocess mode (its scheduler and
    tokenizer are separate processes), so each render runs in a child process with its own
    ``PROMETHEUS_MULTIPROC_DIR`` and is read back through ``MultiProcessCollector``: help
    texts read "Multiprocess metric" and there are no ``_created`` samples, as on a worker.
    """
    with tempfile.TemporaryDirectory() as multiproc_dir:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": multiproc_dir}
        child = subprocess.run(
            [sys.executable, __file__, str(_ROOT[0]), "--metrics", "priority" if priority else "plain"],
            env=env, check=True, capture_output=True, text=True)
    return child.stdout


def _metrics_child(priority: bool) -> str:
    """The body of ``render_metrics``, in a process whose prometheus-client is multiprocess."""
    # a fixed pid label on the "all"-mode gauges, so a re-run writes the same bytes; bound
    # as prometheus-client's default process identifier when its values module is imported
    os.getpid = lambda: 4242
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
    from prometheus_client.exposition import generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    use_runtime_context(LAUNCHES["priority" if priority else "enabled"])
    mc = importlib.import_module("sglang.srt.observability.metrics_collector")
    classes: dict[str, Any] = {"_counter_cls": Counter, "_gauge_cls": Gauge,
                               "_histogram_cls": Histogram, "_summary_cls": Summary}
    hooks = {name: staticmethod(_unregistered(cls)) for name, cls in classes.items()}
    # the labels SchedulerMetricsCollector.init_new gives a TP-1, non-disaggregated worker
    labels: dict[str, Any] = {"model_name": SERVED_NAME, "engine_type": "unified",
                              "tp_rank": 0, "pp_rank": 0, "moe_ep_rank": 0}
    if priority:
        labels["priority"] = ""
    scheduler = type("Scheduler", (mc.SchedulerMetricsCollector,), hooks)(
        labels=labels, server_args=None)
    running = mc.QueueCount(total=3, by_priority={0: 2, 5: 1} if priority else None)
    queued = mc.QueueCount(total=4, by_priority={0: 1, 5: 3} if priority else None)
    stats = mc.SchedulerStats(
        num_running_reqs=running, num_queue_reqs=queued, gen_throughput=412.5,
        cache_hit_rate=0.62, token_usage=0.18, full_token_usage=0.18, num_used_tokens=155_217,
        kv_available_tokens=600_000, kv_evictable_tokens=107_098, kv_used_tokens=155_217,
        utilization=0.4, new_token_ratio=0.35, is_cuda_graph=1)
    scheduler.log_stats(stats)
    tokenizer_labels = {"model_name": SERVED_NAME, "engine_type": "unified"}
    if priority:
        tokenizer_labels["priority"] = ""
    tokenizer = type("Tokenizer", (mc.TokenizerMetricsCollector,), hooks)(
        server_args=None, labels=tokenizer_labels)
    for prompt, generated, cached, streamed in ((812, 64, 512, False), (1_024, 128, 768, True)):
        tokenizer.observe_one_finished_request(
            tokenizer_labels, prompt_tokens=prompt, generation_tokens=generated,
            cached_tokens=cached, e2e_latency=1.25, has_grammar=False,
            cached_tokens_details={"device": cached, "host": 0}, is_streaming=streamed,
            time_per_output_token=0.012)
    files = CollectorRegistry()
    MultiProcessCollector(files)  # type: ignore[no-untyped-call]
    families = sorted(files.collect(), key=lambda family: family.name)  # file order varies

    class Sorted:
        def collect(self) -> Any:
            return families

    registry = CollectorRegistry()
    registry.register(Sorted())
    text: str = generate_latest(registry).decode()
    return text


def _unregistered(cls: Any) -> Any:
    """A metric class that does not register itself (multiprocess mode reads the files)."""

    def build(*args: Any, **kwargs: Any) -> Any:
        return cls(*args, registry=None, **kwargs)

    return build


# -- /v1/loads ---------------------------------------------------------------------------------


def render_loads(*, sections: bool) -> dict[str, Any]:
    """The ``/v1/loads`` JSON; with ``sections``, two DP ranks and every optional section."""
    ls = importlib.import_module("sglang.srt.managers.load_snapshot")
    core = {"timestamp": STARTUP_TIME + 600, "num_used_tokens": 155_217,
            "num_total_tokens": 158_001, "num_active_tokens": 158_001,
            "max_total_num_tokens": MAX_TOTAL_NUM_TOKENS,
            "max_running_requests": MAX_RUNNING_REQUESTS, "token_usage": 0.18,
            "gen_throughput": 412.5, "cache_hit_rate": 0.62, "utilization": 0.4,
            "num_waiting_uncached_tokens": 2_784, "total_prefill_uncached_tokens": 20_480,
            "total_prefill_busy_us": 9_100_000}
    if not sections:
        snapshots = [ls.LoadSnapshot(dp_rank=0, num_running_reqs=3, num_waiting_reqs=4, **core)]
        accelerators = 1
    else:
        extra = {
            "memory": ls.MemoryMetrics(weight_gb=15.2, kv_cache_gb=49.3, graph_gb=1.1,
                                       token_capacity=MAX_TOTAL_NUM_TOKENS),
            "speculative": ls.SpeculativeMetrics(accept_length=2.7, accept_rate=0.68),
            "lora": ls.LoRAMetrics(slots_used=1, slots_total=8, utilization=0.125),
            "disaggregation": ls.DisaggregationMetrics(mode="null"),
        }
        snapshots = [
            ls.LoadSnapshot(dp_rank=0, num_running_reqs=3, num_waiting_reqs=4, **core, **extra,
                            queues=ls.QueueMetrics(waiting=4, grammar=0, paused=0, retracted=0,
                                                   prealloc_ready=0)),
            ls.LoadSnapshot(dp_rank=1, num_running_reqs=2, num_waiting_reqs=1, **core, **extra,
                            queues=ls.QueueMetrics(waiting=1, grammar=0, paused=0, retracted=0,
                                                   prealloc_ready=0)),
        ]
        accelerators = 1
    return {"timestamp": TIMESTAMP, "version": SGLANG_VERSION, "accelerator": "NVIDIA H100 80GB HBM3",
            "num_accelerators": accelerators, "loads": [s.to_dict(None) for s in snapshots]}


# -- /server_info and /model_info ----------------------------------------------------------------


def _plain(value: Any) -> Any:
    import msgspec

    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, msgspec.Struct):
        return {f: _plain(getattr(value, f)) for f in value.__struct_fields__}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def server_args(flags: dict[str, Any]) -> dict[str, Any]:
    """Every ``ServerArgs`` field at its declared default, then the launch's values."""
    import msgspec

    args: dict[str, Any] = {}
    for cls in _namespaces().values():
        defaults = cls.__struct_defaults__
        names = cls.__struct_fields__[len(cls.__struct_fields__) - len(defaults):]
        for name, default in zip(names, defaults, strict=True):
            if type(default).__name__ == "Factory":  # msgspec.field(default_factory=...)
                default = default.factory()
            args[name] = None if default is msgspec.NODEFAULT else _plain(default)
    args.update(_RESOLVED)
    args.update(model_path=MODEL_PATH, served_model_name=SERVED_NAME, host="0.0.0.0", port=30000)
    args.update(flags)
    args["enable_dp_attention"] = False
    return args


def _launch_command(flags: dict[str, Any]) -> str:
    words = ["python3 -m sglang.launch_server", f"--model-path {MODEL_PATH}",
             f"--served-model-name {SERVED_NAME}", "--host 0.0.0.0", "--port 30000"]
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        words.append(flag if value is True else f"{flag} {value}")
    return " ".join(words)


def render_server_info(flags: dict[str, Any]) -> dict[str, Any]:
    """``GET /server_info``: resolved args, handshake info, live state, version."""
    args = server_args(flags)
    scheduler_info = {
        "status": "ready", "max_total_num_tokens": MAX_TOTAL_NUM_TOKENS,
        "max_req_input_len": 32_762, "startup_time": STARTUP_TIME,
        "hicache_object_layout": {"enabled": False, "backend": None, "page_size": 1,
                                  "hicache_object_layout": {"pools": []},
                                  "reason": "Hierarchical cache is disabled"},
    }
    internal = {**args, "world_size": 1, "startup_time": STARTUP_TIME,
                "effective_max_running_requests_per_dp": MAX_RUNNING_REQUESTS,
                "last_gen_throughput": 412.5,
                "memory_usage": {"weight": 15.2, "kvcache": 49.3, "startup_available": 78.9,
                                 "token_capacity": MAX_TOTAL_NUM_TOKENS, "token_capacity_swa": None,
                                 "graph": {"decode": 1.1}}}
    return {**args, "launch_command": _launch_command(flags), **scheduler_info, "kv_events": None,
            "startup_time": STARTUP_TIME, "internal_states": [internal], "version": SGLANG_VERSION,
            "frontend": "python"}


def render_model_info() -> dict[str, Any]:
    """``GET /model_info`` of a Qwen2.5 chat model with no parsers configured."""
    return {"model_path": MODEL_PATH, "served_model_name": SERVED_NAME, "tokenizer_path": MODEL_PATH,
            "is_generation": True, "preferred_sampling_params": None, "weight_version": "default",
            "load_format": "auto", "reasoning_parser": None, "tool_call_parser": None,
            "disaggregation_mode": "null", "has_image_understanding": False,
            "has_audio_understanding": False, "model_type": "qwen2",
            "architectures": ["Qwen2ForCausalLM"]}


# -- auth --------------------------------------------------------------------------------------

PROBE_PATHS = ("/health", "/health_generate", "/ready", "/metrics", "/server_info",
               "/get_server_info", "/model_info", "/get_model_info", "/v1/loads", "/v1/models",
               "/v1/chat/completions")


def render_auth() -> dict[str, Any]:
    """Which paths a worker started with ``--api-key`` serves without it, by SGLang's decision."""
    auth = importlib.import_module("sglang.srt.utils.auth")

    def status(path: str, header: str | None) -> int:
        decision = auth.decide_request_auth(
            method="GET", path=path, authorization_header=header, api_key=API_KEY,
            admin_api_key=None, auth_level=auth.AuthLevel.NORMAL)
        return 200 if decision.allowed else int(decision.error_status_code)

    return {
        "api_key": API_KEY,
        "without_key": {path: status(path, None) for path in PROBE_PATHS},
        "with_bearer_key": {path: status(path, f"Bearer {API_KEY}") for path in PROBE_PATHS},
        "unauthorized_body": {"error": "Unauthorized"},
    }


# -- main --------------------------------------------------------------------------------------


METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""What prometheus-client's exposition (SGLang's ``/metrics`` app) answers with."""


def _write(name: str, payload: str | dict[str, Any], index: dict[str, Any]) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload, indent=1) + "\n"
    (OUT / name).write_text(text)
    content_type = METRICS_CONTENT_TYPE if name.endswith(".prom") else "application/json"
    index[name] = {"status": 200, "content_type": content_type}
    print(f"wrote {OUT / name} ({len(text)} bytes)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel_root", type=Path, help="directory the sglang wheel was unzipped into")
    parser.add_argument("--metrics", choices=["plain", "priority"],
                        help=argparse.SUPPRESS)  # internal: one /metrics render, to stdout
    args = parser.parse_args(argv)
    _ROOT.append(args.wheel_root.resolve())
    install(_ROOT[0])
    if args.metrics:
        sys.stdout.write(_metrics_child(args.metrics == "priority"))
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {}
    _write("metrics.prom", render_metrics(priority=False), index)
    _write("metrics_priority.prom", render_metrics(priority=True), index)
    _write("loads.json", render_loads(sections=False), index)
    _write("loads_all_sections.json", render_loads(sections=True), index)
    for launch in ("default", "enabled"):
        _write(f"server_info_{launch}.json", render_server_info(LAUNCHES[launch]), index)
    _write("model_info.json", render_model_info(), index)
    _write("auth.json", render_auth(), index)
    (OUT / "index.json").write_text(json.dumps({"fixtures": index}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
