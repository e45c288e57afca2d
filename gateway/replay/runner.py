"""``switchyard replay``: the same traffic through each policy in turn, on fresh simulators.

Policies run one after the other, each on new simulators with the same seed and an empty
gateway state, so their figures differ only by what the policies do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from backends.sim import SimConfig
from gateway.replay.drive import DriveOptions, drive
from gateway.replay.report import PolicyReport, summarise
from gateway.replay.sandbox import replay_key, start_sandbox
from gateway.replay.traffic import Traffic
from policies.document import Policy
from policies.loader import load_policy

DEFAULT_SIM = SimConfig(
    capacity_tokens=200_000,
    # an 8B model on one modern GPU: ~20k prompt tokens/s of prefill, ~5 ms per output token
    prefill_us_per_token=50.0,
    base_ttft_ms=5.0,
    itl_ms=5.0,
    max_running=64,
    enable_cache_report=True,  # the report's hit rates and cached-input cost read cached tokens
)
"""Simulator knobs of a replay unless overridden (``--sim-*`` flags)."""


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How a replay runs."""

    drive: DriveOptions = field(default_factory=DriveOptions)
    sim: SimConfig = DEFAULT_SIM
    warmup: int = 8
    """Requests replayed (and thrown away) through a first sandbox before any measured run, so
    that one-time costs of the process (imports, first ONNX inference, tokenizer loads) do not
    land on the first policy's TTFT; 0 skips it."""


@dataclass(frozen=True, slots=True)
class PolicyFile:
    """A policy to replay: validated, and as the plain document the sandbox rewrites."""

    path: Path
    policy: Policy
    document: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> PolicyFile:
        """Read and validate; raises ``PolicyError``."""
        policy = load_policy(path)
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return cls(Path(path), policy, document)


def labels(paths: Sequence[Path]) -> list[str]:
    """Column headings: file names, or whole paths when two files share a name."""
    names = [p.name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


async def replay(policies: Sequence[PolicyFile], traffic: Traffic,
                 options: ReplayOptions | None = None) -> list[PolicyReport]:
    """Replay ``traffic`` through each policy in turn; one report per policy, in order."""
    options = options or ReplayOptions()
    if options.warmup and policies:
        head = dataclasses.replace(traffic, requests=traffic.requests[: options.warmup])
        await replay_one(policies[0], "warm-up", head, options)
    reports = []
    for policy, label in zip(policies, labels([p.path for p in policies])):
        reports.append(await replay_one(policy, label, traffic, options))
    return reports


def run_replay(policies: Sequence[PolicyFile], traffic: Traffic,
               options: ReplayOptions | None = None) -> list[PolicyReport]:
    """``replay`` in a new event loop (uvloop when installed): the sims, the gateway and the
    client all share it, so a faster loop means less of the measured TTFT is the replay's own."""
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(replay(policies, traffic, options))


async def replay_one(policy: PolicyFile, label: str, traffic: Traffic,
                     options: ReplayOptions) -> PolicyReport:
    """Start a sandbox for ``policy``, send the traffic, stop it, and sum up."""
    with tempfile.TemporaryDirectory(prefix="switchyard-replay-") as workdir:
        sandbox = await start_sandbox(policy.policy, policy.document, Path(workdir), options.sim)
        try:
            started = time.perf_counter()
            outcomes = await drive(sandbox.url, traffic, replay_key, sandbox.default_tenant, options.drive)
            elapsed = time.perf_counter() - started
        finally:
            await sandbox.aclose()
    return summarise(label, policy.policy, sandbox.workers, outcomes, elapsed)
