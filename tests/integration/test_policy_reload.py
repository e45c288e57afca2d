"""Live policy changes through the admin API and the watched file, on one gateway."""

from __future__ import annotations

import copy
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.local_stack import ADMIN_KEY, DEMO_KEY, LOCAL_MODEL
from gateway.telemetry import AccessLog, Telemetry
from policies.keys import hash_key
from tests.conftest import ThreadedStack, eventually

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
NEW_KEY = "sy-reload-key"


@pytest.fixture
def live(tmp_path: Any) -> Iterator[tuple[ThreadedStack, io.StringIO]]:
    access = io.StringIO()
    stack = ThreadedStack(tmp_path, telemetry=Telemetry(None, AccessLog(access)),
                          settings_overrides={"policy_poll_s": 0.1, "drain_timeout_s": 30})
    yield stack, access
    stack.close()


def _document(stack: ThreadedStack) -> dict[str, Any]:
    return yaml.safe_load(stack.stack.policy_path.read_text())  # type: ignore[no-any-return]


def _push(stack: ThreadedStack, document: dict[str, Any] | str) -> httpx.Response:
    body = document if isinstance(document, str) else yaml.safe_dump(document)
    return httpx.post(stack.url + "/admin/policy", content=body, headers=ADMIN, timeout=30)


def _active(stack: ThreadedStack) -> dict[str, Any]:
    return httpx.get(stack.url + "/admin/policy", headers=ADMIN).json()  # type: ignore[no-any-return]


def _with_new_tenant(document: dict[str, Any], version: str) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    changed["version"] = version
    changed["tenants"]["late"] = {"models": [LOCAL_MODEL], "keys": [{"name": "late", "sha256": hash_key(NEW_KEY)}]}
    return changed


def test_a_pushed_policy_takes_effect_and_is_shown(live: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, _ = live
    before = _active(stack)
    assert before["version"] == "local-stack" and before["source"] == "file" and len(before["sha256"]) == 64
    late = openai.OpenAI(base_url=stack.url + "/v1", api_key=NEW_KEY, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        late.chat.completions.create(model=LOCAL_MODEL, max_tokens=2, messages=[{"role": "user", "content": "x"}])
    response = _push(stack, _with_new_tenant(_document(stack), "v2"))
    assert response.status_code == 200, response.text
    assert response.json()["applied"] is True and response.json()["version"] == "v2"
    after = _active(stack)
    assert after["version"] == "v2" and after["source"] == "api" and after["sha256"] != before["sha256"]
    late.chat.completions.create(model=LOCAL_MODEL, max_tokens=2, messages=[{"role": "user", "content": "x"}])
    assert yaml.safe_load(httpx.get(stack.url + "/admin/policy?format=yaml", headers=ADMIN).text)["version"] == "v2"
    again = _push(stack, _with_new_tenant(_document(stack), "v2"))
    assert again.json()["applied"] is False  # same document: nothing rebuilt
    metrics = httpx.get(stack.url + "/metrics").text
    assert 'switchyard_policy_reloads_total{result="applied",source="api"} 1.0' in metrics
    assert 'switchyard_policy_info{sha256="' + after["sha256"][:12] in metrics


def test_a_broken_policy_is_refused_and_the_old_one_keeps_serving(live: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, _ = live
    before = _active(stack)
    broken = _document(stack)
    broken["models"][LOCAL_MODEL]["deployments"][0]["backend"] = "nowhere"
    broken["backends"]["local"]["selection"] = {"type": "no_such_policy"}
    response = _push(stack, broken)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_policy" and error["type"] == "invalid_request_error"
    assert f"models.{LOCAL_MODEL}.deployments[0].backend" in error["message"]
    assert "backends.local.selection" in error["message"]
    assert _push(stack, "version: [unclosed").json()["error"]["code"] == "invalid_policy"
    assert _active(stack)["sha256"] == before["sha256"]
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    client.chat.completions.create(model=LOCAL_MODEL, max_tokens=2, messages=[{"role": "user", "content": "x"}])
    assert 'switchyard_policy_reloads_total{result="rejected",source="api"} 2.0' in httpx.get(stack.url + "/metrics").text


def test_the_admin_policy_api_needs_the_admin_key(live: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, _ = live
    denied = httpx.post(stack.url + "/admin/policy", content="version: x",
                        headers={"authorization": f"Bearer {DEMO_KEY}"})
    assert denied.status_code in (401, 403) and "error" in denied.json()
    assert httpx.get(stack.url + "/admin/policy").status_code in (401, 403)


def test_a_changed_file_is_applied_and_a_broken_one_ignored(live: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, _ = live
    path = stack.stack.policy_path
    original = _document(stack)
    path.write_text(yaml.safe_dump(_with_new_tenant(original, "from-file")))
    deadline = time.monotonic() + 5
    while _active(stack)["version"] != "from-file" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _active(stack)["version"] == "from-file" and _active(stack)["source"] == "file"
    path.write_text("backends: {}\nmodels: {}\n")  # invalid: no models
    time.sleep(0.5)
    assert _active(stack)["version"] == "from-file"
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=NEW_KEY, max_retries=0)
    client.chat.completions.create(model=LOCAL_MODEL, max_tokens=2, messages=[{"role": "user", "content": "x"}])


def test_in_flight_streams_finish_under_the_policy_they_started_with(
        live: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, _ = live
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    stream = client.chat.completions.create(model=LOCAL_MODEL, stream=True, max_tokens=150,
                                            messages=[{"role": "user", "content": "a long answer"}])
    chunks = [next(iter(stream))]
    # the new policy renames the model and changes the pool (new connections, new workers list)
    changed = _document(stack)
    changed["version"] = "renamed"
    changed["models"]["llama-next"] = changed["models"].pop(LOCAL_MODEL)
    changed["tenants"]["team-b"]["models"] = ["llama-next"]
    changed["routes"]["auto"]["cheap"] = "llama-next"
    changed["backends"]["local"]["workers"] = list(reversed(changed["backends"]["local"]["workers"]))
    changed["backends"]["local"]["health_interval_s"] = 0.5
    pushed: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: pushed.append(_push(stack, changed)))
    thread.start()
    chunks += list(stream)
    thread.join(30)
    assert pushed[0].status_code == 200, pushed[0].text
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) >= 100  # the whole answer arrived
    assert chunks[-1].choices[0].finish_reason == "length"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=LOCAL_MODEL, max_tokens=2, messages=[{"role": "user", "content": "x"}])
    client.chat.completions.create(model="llama-next", max_tokens=2, messages=[{"role": "user", "content": "x"}])


def test_a_worker_that_stays_keeps_its_id_when_another_leaves(live: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, access = live
    changed = _document(stack)
    second = changed["backends"]["local"]["workers"][1]
    changed["backends"]["local"]["workers"] = [second]
    assert _push(stack, changed).status_code == 200
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    workers = {client.chat.completions.with_raw_response.create(
        model=LOCAL_MODEL, max_tokens=2, messages=[{"role": "user", "content": f"x{i}"}]).headers["x-switchyard-worker"]
        for i in range(4)}
    assert workers == {"local/1"}
    lines = [json.loads(line) for line in access.getvalue().splitlines()]
    assert lines[-1]["worker"] == "local/1"


def test_content_capture_records_what_replay_needs(live: tuple[ThreadedStack, io.StringIO]) -> None:
    stack, access = live
    changed = _document(stack)
    changed["observability"] = {"capture_content": True}
    assert _push(stack, changed).status_code == 200
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=DEMO_KEY, max_retries=0)
    answer = client.chat.completions.create(
        model=LOCAL_MODEL, max_tokens=4, messages=[{"role": "user", "content": "capture this"}],
        extra_headers={"x-switchyard-session": "s-42"})
    # the access line is written just after the response has gone out
    line = eventually(lambda: next((x for x in map(json.loads, access.getvalue().splitlines())
                                    if x.get("session") == "s-42"), None))
    assert line is not None, "no access line for the captured request"
    assert line["request"]["messages"] == [{"role": "user", "content": "capture this"}]
    assert line["request"]["max_tokens"] == 4 and line["session"] == "s-42"
    assert line["completion"] == answer.choices[0].message.content


def test_a_push_reaches_a_second_process_sharing_redis_within_a_second(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    import redis

    from tests.integration.test_limits import free_port, serve_process
    from tests.redis_support import REDIS_URL, require_redis

    require_redis()
    cluster = f"reload-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SWITCHYARD_CLUSTER", cluster)
    monkeypatch.setenv("SWITCHYARD_ACCESS_LOG", "off")
    stack = ThreadedStack(tmp_path, sglang_workers=1)
    ports = [free_port(), free_port()]
    processes = [serve_process(stack.stack.policy_path, port, REDIS_URL) for port in ports]
    first, second = (f"http://127.0.0.1:{port}" for port in ports)
    try:
        document = _with_new_tenant(_document(stack), "shared-v2")
        pushed = httpx.post(first + "/admin/policy", content=yaml.safe_dump(document), headers=ADMIN, timeout=30)
        assert pushed.status_code == 200, pushed.text
        assert pushed.json()["revision"] >= 1
        started = time.monotonic()
        while httpx.get(second + "/admin/policy", headers=ADMIN).json()["version"] != "shared-v2":
            assert time.monotonic() - started < 1.0, "the second process did not follow within a second"
            time.sleep(0.01)
        assert httpx.get(second + "/admin/policy", headers=ADMIN).json()["source"] == "redis"
        late = openai.OpenAI(base_url=second + "/v1", api_key=NEW_KEY, max_retries=0)
        late.chat.completions.create(model=LOCAL_MODEL, max_tokens=2, messages=[{"role": "user", "content": "x"}])
        broken = httpx.post(first + "/admin/policy", content="models: {}", headers=ADMIN, timeout=30)
        assert broken.status_code == 400
        time.sleep(1.2)
        assert {httpx.get(url + "/admin/policy", headers=ADMIN).json()["version"] for url in (first, second)} \
            == {"shared-v2"}
    finally:
        for process in processes:
            process.terminate()
            process.wait(15)
        stack.close()
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(f"switchyard:{{{cluster}}}:policy", f"switchyard:{{{cluster}}}:policy:rev")
