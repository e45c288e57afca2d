"""Policy replay: recorded traffic through simulated workers under one or more policies."""

from __future__ import annotations

from gateway.replay.drive import DriveOptions, Outcome, drive
from gateway.replay.report import PolicyReport, render_json, render_table, summarise
from gateway.replay.runner import (
    DEFAULT_SIM,
    PolicyFile,
    ReplayOptions,
    replay,
    run_replay,
)
from gateway.replay.sandbox import ReplayError, Sandbox, replay_key, start_sandbox
from gateway.replay.traffic import Traffic, TrafficError, TrafficRequest, read_traffic

__all__ = [
    "DEFAULT_SIM",
    "DriveOptions",
    "Outcome",
    "PolicyFile",
    "PolicyReport",
    "ReplayError",
    "ReplayOptions",
    "Sandbox",
    "Traffic",
    "TrafficError",
    "TrafficRequest",
    "drive",
    "read_traffic",
    "render_json",
    "render_table",
    "replay",
    "replay_key",
    "run_replay",
    "start_sandbox",
    "summarise",
]
