"""A stack for the console's tests: the demo stack plus a canary on ``gpt-4o-mini``
(stable ``v1`` on the OpenAI sim, canary ``v2`` on the local SGLang pool, a fixed 10% split)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from gateway.local_stack import ADMIN_KEY, OPENAI_MODEL

CANARY_MODEL = OPENAI_MODEL
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def with_canary(document: dict[str, Any]) -> None:
    """Give ``gpt-4o-mini`` two versions and a fixed-weight canary."""
    document["models"][CANARY_MODEL] = {
        "versions": {"v1": {"deployments": [{"backend": "openai", "model": "sim-gpt"}]},
                     "v2": {"deployments": [{"backend": "local", "model": "sim-llama"}]}},
        "stable": "v1", "canary": {"version": "v2", "weight": 0.1},
    }


def log_in(base_url: str, key: str = ADMIN_KEY) -> tuple[str, str]:
    """Log in through the form as a browser does; the session cookie and the page's CSRF token."""
    response = httpx.post(base_url + "/console/login", data={"key": key}, headers={"origin": base_url})
    assert response.status_code == 303, response.text
    cookie = response.cookies["sy_console"]
    page = httpx.get(base_url + "/console/canaries", cookies={"sy_console": cookie})
    match = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page.text)
    assert match is not None, page.text
    return cookie, match.group(1)


def canary_phase(base_url: str) -> str:
    """The canary's phase as ``GET /admin/canaries`` shows it."""
    canaries = httpx.get(base_url + "/admin/canaries", headers=ADMIN).json()["canaries"]
    phase: str = next(c for c in canaries if c["model"] == CANARY_MODEL)["phase"]
    return phase
