"""The canary admin API and ``switchyard canary``, against a real server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from litestar import Litestar

from gateway.canary_admin import CANARY_ADMIN_HANDLERS
from gateway.cli import main
from gateway.errors import EXCEPTION_HANDLERS
from policies.canary import CanaryController
from policies.keys import KeyRing, hash_key
from tests.unit.test_canary._support import canary_policy, plan

ADMIN = "sy-admin-test"


@pytest.fixture
async def gateway() -> AsyncIterator[str]:
    policy = canary_policy(plan()).model_copy(update={"admin_key_sha256": hash_key(ADMIN)})
    controller = CanaryController.create(None)
    await controller.activate(controller.bind(policy))
    app = Litestar(route_handlers=list(CANARY_ADMIN_HANDLERS), exception_handlers=EXCEPTION_HANDLERS)
    app.state.gateway = SimpleNamespace(runtime=SimpleNamespace(policy=policy, keyring=KeyRing(policy)))
    app.state.canaries = controller
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    await asyncio.wait_for(task, 10)


async def test_status_and_commands(gateway: str) -> None:
    auth = {"authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=gateway, headers=auth) as client:
        [chat] = (await client.get("/admin/canaries")).json()["canaries"]
        assert (chat["model"], chat["phase"], chat["weight"], chat["step"]) == ("chat", "running", 0.05, 1)
        paused = await client.post("/admin/canaries/chat/pause", json={"reason": "looking at logs"})
        assert paused.status_code == 200 and paused.json()["phase"] == "paused"
        assert paused.json()["history"][-1]["reason"] == "looking at logs"
        again = await client.post("/admin/canaries/chat/pause")
        assert again.status_code == 409 and again.json()["error"]["code"] == "canary_conflict"
        missing = await client.post("/admin/canaries/other/promote")
        assert missing.status_code == 404
        bad = await client.post("/admin/canaries/chat/resume", content=b"not json")
        assert bad.status_code == 400
        assert (await client.post("/admin/canaries/chat/promote")).json()["phase"] == "promoted"


async def test_the_admin_key_is_required(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as client:
        assert (await client.get("/admin/canaries")).status_code == 401
        response = await client.post("/admin/canaries/chat/rollback", headers={"authorization": "Bearer nope"})
        assert response.status_code == 401


async def test_the_cli(gateway: str, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--url", gateway, "--admin-key", ADMIN]
    assert await asyncio.to_thread(main, ["canary", "status", *common]) == 0
    out = capsys.readouterr().out
    assert "chat: canary v2 beside stable v1 (split), running, weight 5.0%, step 1/3" in out
    assert "next: running" in out
    assert await asyncio.to_thread(main, ["canary", "rollback", "chat", "--reason", "bad", *common]) == 0
    assert "rolled back: bad" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["canary", "status", "chat", "--json", *common]) == 0
    [chat] = json.loads(capsys.readouterr().out)
    assert chat["phase"] == "rolled_back"
    assert await asyncio.to_thread(main, ["canary", "pause", "chat", *common]) == 1
    assert "HTTP 409" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["canary", "status", "--url", gateway, "--admin-key", "wrong"]) == 1
