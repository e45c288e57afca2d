"""The console's guards over plain HTTP: without the admin key or a session nothing is read or
changed, a session's change needs its CSRF token from this origin, and a session cookie is
signed, expiring and bound to the admin key. Also the read-only admin endpoints it adds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.console import CSP
from gateway.local_stack import ADMIN_KEY, DEMO_KEY, LOCAL_MODEL
from policies.keys import hash_key
from tests.conftest import ThreadedStack
from tests.console_support import ADMIN, CANARY_MODEL, canary_phase, log_in, with_canary


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    threaded = ThreadedStack(tmp_path_factory.mktemp("console-api"), edit_policy=with_canary)
    yield threaded
    threaded.close()


def _version(url: str) -> str:
    version: str = httpx.get(url + "/admin/policy", headers=ADMIN).json()["version"]
    return version


def test_login_gives_a_short_lived_httponly_strict_cookie_and_pages_hold_no_key(stack: ThreadedStack) -> None:
    assert httpx.get(stack.url + "/console/workers").headers["location"] == "/console/login"
    login = httpx.get(stack.url + "/console/login")
    assert login.headers["content-security-policy"] == CSP and "unsafe" not in CSP
    wrong = httpx.post(stack.url + "/console/login", data={"key": DEMO_KEY}, headers={"origin": stack.url})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    right = httpx.post(stack.url + "/console/login", data={"key": ADMIN_KEY}, headers={"origin": stack.url})
    attributes = [part.strip().lower() for part in right.headers["set-cookie"].split(";")]
    assert {"httponly", "samesite=strict", "path=/console", "max-age=1800"} <= set(attributes)
    cookie = right.cookies["sy_console"]
    for page in ("workers", "routes", "canaries", "policy", "usage"):
        response = httpx.get(f"{stack.url}/console/{page}", cookies={"sy_console": cookie})
        assert response.status_code == 200 and response.headers["content-security-policy"] == CSP
        assert ADMIN_KEY not in response.text and hash_key(ADMIN_KEY) not in response.text
        assert "<script>" not in response.text and " style=" not in response.text  # nothing inline


def test_a_login_from_another_origin_is_refused(stack: ThreadedStack) -> None:
    response = httpx.post(stack.url + "/console/login", data={"key": ADMIN_KEY}, headers={"origin": "https://evil.example"})
    assert response.status_code == 403 and "set-cookie" not in response.headers


@pytest.mark.parametrize("cookie", ["", "forged", "9999999999.00.abcd", "tampered", "expired"])
def test_without_a_valid_session_nothing_is_read_or_changed(stack: ThreadedStack, cookie: str) -> None:
    real, token = log_in(stack.url)
    expires, nonce, signature = real.split(".")
    value = {"tampered": f"{int(expires) + 3600}.{nonce}.{signature}",
             "expired": f"1000.{nonce}.{signature}"}.get(cookie, cookie)
    cookies = {"sy_console": value} if value else {}
    before_phase, before_version = canary_phase(stack.url), _version(stack.url)
    headers = {"x-csrf-token": token}
    assert httpx.get(stack.url + "/console/api/workers", cookies=cookies).status_code == 401
    promote = httpx.post(f"{stack.url}/console/api/canaries/{CANARY_MODEL}/promote", cookies=cookies, headers=headers)
    assert promote.status_code == 401
    text = httpx.get(stack.url + "/admin/policy?format=yaml", headers=ADMIN).text
    applied = httpx.post(stack.url + "/console/api/policy", cookies=cookies, headers=headers,
                         content=text.replace("version: local-stack", "version: not-by-you"))
    assert applied.status_code == 401
    assert (canary_phase(stack.url), _version(stack.url)) == (before_phase, before_version)


@pytest.mark.parametrize("headers", [{}, {"x-csrf-token": "0" * 64}, "other origin"])
def test_a_session_change_without_its_csrf_token_changes_nothing(stack: ThreadedStack, headers: Any) -> None:
    cookie, token = log_in(stack.url)
    if headers == "other origin":
        headers = {"x-csrf-token": token, "origin": "https://evil.example"}
    cookies = {"sy_console": cookie}
    before_phase, before_version = canary_phase(stack.url), _version(stack.url)
    for action in ("promote", "rollback", "pause"):
        response = httpx.post(f"{stack.url}/console/api/canaries/{CANARY_MODEL}/{action}", cookies=cookies,
                              headers=headers)
        assert response.status_code == 403 and response.json()["error"]["code"] == "csrf_failed"
    text = httpx.get(stack.url + "/admin/policy?format=yaml", headers=ADMIN).text
    response = httpx.post(stack.url + "/console/api/policy", cookies=cookies, headers=headers,
                          content=text.replace("version: local-stack", "version: forged"))
    assert response.status_code == 403
    assert httpx.post(stack.url + "/console/logout", cookies=cookies, data={"csrf": "0" * 64}).status_code == 403
    assert (canary_phase(stack.url), _version(stack.url)) == (before_phase, before_version)
    # the same session with its token does change things (so the refusals above were the guard's)
    response = httpx.post(f"{stack.url}/console/api/canaries/{CANARY_MODEL}/pause", cookies=cookies,
                          headers={"x-csrf-token": token, "origin": stack.url})
    assert response.status_code == 200 and canary_phase(stack.url) == "paused"
    assert httpx.post(f"{stack.url}/console/api/canaries/{CANARY_MODEL}/resume", cookies=cookies,
                      headers={"x-csrf-token": token}).status_code == 200


def test_the_admin_endpoints_it_adds_need_the_admin_key(stack: ThreadedStack) -> None:
    for path in ("/admin/workers", "/admin/routes", "/admin/usage/summary"):
        assert httpx.get(stack.url + path).status_code == 401
        assert httpx.get(stack.url + path, headers={"authorization": f"Bearer {DEMO_KEY}"}).status_code == 401
    assert httpx.post(stack.url + "/admin/policy/check", content="version: x").status_code == 401


def test_workers_count_each_workers_cached_prompt_tokens(stack: ThreadedStack) -> None:
    def local() -> dict[str, Any]:
        pools = httpx.get(stack.url + "/admin/workers", headers=ADMIN).json()["pools"]
        return {w["id"]: w for w in next(p for p in pools if p["name"] == "local")["workers"]}

    before = local()
    assert sorted(before) == ["local/0", "local/1"]
    shared = "Answer in one word, please, and nothing else at all. " * 30
    for i in range(6):
        response = httpx.post(stack.url + "/v1/chat/completions", headers={"authorization": f"Bearer {DEMO_KEY}"},
                              json={"model": LOCAL_MODEL, "max_tokens": 2,
                                    "messages": [{"role": "user", "content": shared + str(i)}]})
        assert response.status_code == 200
    after = local()
    for worker in ("local/0", "local/1"):
        assert after[worker]["prompt_tokens"] > before[worker]["prompt_tokens"]
        assert after[worker]["cached_tokens"] > before[worker]["cached_tokens"]
        assert 0 < after[worker]["cache_hit_rate"] < 1


def test_policy_check_names_the_path_and_diffs_a_valid_edit_without_applying(stack: ThreadedStack) -> None:
    text = httpx.get(stack.url + "/admin/policy?format=yaml", headers=ADMIN).text
    broken = httpx.post(stack.url + "/admin/policy/check", headers=ADMIN,
                        content=text.replace("strong_share: 0.3", "strong_share: 3")).json()
    assert not broken["valid"] and broken["problems"][0]["path"] == "routes.auto.strong_share"
    valid = httpx.post(stack.url + "/admin/policy/check", headers=ADMIN,
                       content=text.replace("strong_share: 0.3", "strong_share: 0.5")).json()
    assert valid["valid"] and [c["path"] for c in valid["changes"]] == ["routes.auto.strong_share"]
    assert _version(stack.url) == "local-stack"


def test_routes_show_decisions_scores_and_the_threshold(stack: ThreadedStack) -> None:
    for prompt in ("hi", "Prove that there are infinitely many primes, rigorously, step by step."):
        response = httpx.post(stack.url + "/v1/chat/completions", headers={"authorization": f"Bearer {DEMO_KEY}"},
                              json={"model": "auto", "max_tokens": 2, "messages": [{"role": "user", "content": prompt}]})
        assert response.status_code == 200
    route = httpx.get(stack.url + "/admin/routes", headers=ADMIN).json()["routes"][0]
    assert route["name"] == "auto" and 0 < route["threshold"] < 1 and route["target_strong_share"] == 0.3
    assert route["decisions"]["cheap"] + route["decisions"]["strong"] >= 2
    assert sum(bucket["count"] for bucket in route["histogram"]) >= 2


def test_no_admin_key_no_console(tmp_path: Path) -> None:
    stack = ThreadedStack(tmp_path, edit_policy=lambda document: document.pop("admin_key_sha256"))
    try:
        for path in ("/console", "/console/login", "/console/workers", "/console/static/console.js",
                     "/console/api/workers", "/admin/workers"):
            assert httpx.get(stack.url + path).status_code == 404, path
    finally:
        stack.close()


def test_replay_needs_recorded_traffic(stack: ThreadedStack) -> None:
    text = httpx.get(stack.url + "/admin/policy?format=yaml", headers=ADMIN).text
    result = httpx.post(stack.url + "/admin/policy/replay", headers=ADMIN, content=text).json()
    assert not result["ran"] and "no recorded traffic" in result["error"]


def test_replay_estimates_an_edit_on_the_recorded_traffic(tmp_path: Path) -> None:
    access_log = tmp_path / "access.jsonl"

    def capture(document: dict[str, Any]) -> None:
        document["observability"] = {"capture_content": True}
        document["models"][LOCAL_MODEL]["prices"] = {"input": 1.0, "output": 2.0}

    stack = ThreadedStack(tmp_path, edit_policy=capture, settings_overrides={"access_log": str(access_log)})
    try:
        for i in range(3):
            response = httpx.post(stack.url + "/v1/chat/completions", headers={"authorization": f"Bearer {DEMO_KEY}"},
                                  json={"model": LOCAL_MODEL, "max_tokens": 4,
                                        "messages": [{"role": "user", "content": f"hello {i}"}]})
            assert response.status_code == 200
        text = httpx.get(stack.url + "/admin/policy?format=yaml", headers=ADMIN).text
        edited = text.replace("input: 1.0", "input: 10.0")
        result = httpx.post(stack.url + "/admin/policy/replay", headers=ADMIN, content=edited, timeout=200).json()
        assert result["ran"], result
        active, proposed = result["report"]["policies"]
        assert active["answered"] == proposed["answered"] == 3
        assert proposed["cost_usd"] > active["cost_usd"] > 0  # the edit's price shows in the estimate
        assert _version(stack.url) == "local-stack"  # nothing applied
    finally:
        stack.close()
