"""A policy edit previewed without applying it: ``policy check``, ``policy diff``, ``replay``.

The checks are ``policies.loader.parse_policy`` (the problems by path that ``switchyard policy
check`` prints), the diff is ``policies.diff.diff_policies`` against the active policy (what
``switchyard policy diff`` prints), and the replay estimate runs ``switchyard replay`` itself
in a child process (it starts simulators and a gateway of its own, which must not share this
process's event loop or environment) over the access log, when the gateway writes one to a
file with content capture on.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from gateway.settings import Settings
from policies.diff import diff_policies, redact, render_changes
from policies.document import Policy
from policies.loader import PolicyError, parse_policy

REPLAY_LIMIT = 200
"""Recorded requests a console replay sends (the first ones of the access log)."""
REPLAY_TIMEOUT_S = 180.0


def check(text: str, active: Policy | None) -> dict[str, Any]:
    """The edit's problems by path, or (when it is valid) its changes against ``active``."""
    try:
        policy = parse_policy(text, "the edited policy")
    except PolicyError as exc:
        return {"valid": False, "problems": [{"path": path, "message": message} for path, message in exc.problems]}
    out: dict[str, Any] = {"valid": True, "problems": [], "version": policy.version}
    if active is not None:
        changes = diff_policies(active, policy)
        out["changes"] = [{"path": c.path, "kind": c.kind, "old": redact(c.old), "new": redact(c.new),
                           "meaning": c.meaning} for c in changes]
        out["diff"] = render_changes(changes)
    return out


def recorded_traffic(settings: Settings, active: Policy) -> Path | None:
    """The access log to replay, if this gateway records replayable traffic."""
    if settings.access_log in ("stdout", "stderr", "off") or not active.observability.capture_content:
        return None
    path = Path(settings.access_log)
    return path if path.is_file() and path.stat().st_size > 0 else None


async def replay_estimate(active_text: str, edited_text: str, traffic: Path) -> dict[str, Any]:
    """``switchyard replay --policy active --compare edited`` on the recorded traffic, as JSON."""
    with tempfile.TemporaryDirectory(prefix="switchyard-console-") as workdir:
        active_path, edited_path = Path(workdir, "active.yaml"), Path(workdir, "edited.yaml")
        active_path.write_text(active_text, encoding="utf-8")
        edited_path.write_text(edited_text, encoding="utf-8")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "replay", "--policy", str(active_path), "--compare",
            str(edited_path), "--traffic", str(traffic), "--limit", str(REPLAY_LIMIT), "--speed", "0",
            "--warmup", "0", "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        try:
            out, err = await asyncio.wait_for(process.communicate(), REPLAY_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            return {"ran": False, "error": f"the replay took longer than {REPLAY_TIMEOUT_S:.0f} s"}
    if process.returncode != 0:
        return {"ran": False, "error": err.decode(errors="replace").strip()[-2000:]}
    return {"ran": True, "report": json.loads(out)}
