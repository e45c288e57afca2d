"""The operations console in a real headless Chromium (Debian's ``chromium``, driven by
Playwright): log in, watch two workers' cache hit rates move under traffic, promote and roll
back a canary behind a confirmation, see a broken policy edit's error by path, apply a valid
edit and see the version change on ``GET /admin/policy``. No page may break its CSP."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.local_stack import ADMIN_KEY, DEMO_KEY, LOCAL_MODEL
from tests.conftest import ThreadedStack
from tests.console_support import ADMIN, CANARY_MODEL, canary_phase, with_canary

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extras have it)")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("no Chromium: apt-get install -y chromium (.ci/run installs it)", allow_module_level=True)
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run"]


@pytest.fixture(scope="module")
def console_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    stack = ThreadedStack(tmp_path_factory.mktemp("console"), edit_policy=with_canary)
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, console_stack: ThreadedStack) -> Iterator[Any]:
    """A logged-in page; fails the test on any script error or CSP violation."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.on("console", lambda message: problems.append(message.text)
           if message.type == "error" else None)
    tab.goto(console_stack.url + "/console")
    assert tab.url.endswith("/console/login")
    tab.fill("input[name=key]", ADMIN_KEY)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/console/workers")
    assert ADMIN_KEY not in tab.content()
    yield tab
    context.close()
    assert not problems, problems


def _ask(url: str, prompt: str) -> None:
    response = httpx.post(url + "/v1/chat/completions", timeout=10, headers={"authorization": f"Bearer {DEMO_KEY}"},
                          json={"model": LOCAL_MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": prompt}]})
    assert response.status_code == 200, response.text


def test_workers_show_each_cache_hit_rate_moving_under_traffic(page: Any, console_stack: ThreadedStack) -> None:
    for worker in ("local/0", "local/1"):
        page.wait_for_selector(f'tr[data-worker="{worker}"]')
        assert page.text_content(f'tr[data-worker="{worker}"] td.hit') == "–"  # nothing answered yet
    shared = "You are a careful assistant who answers briefly. " * 40
    for i in range(8):  # round robin: each worker sees the shared prefix four times
        _ask(console_stack.url, shared + f"question {i}")
    for worker in ("local/0", "local/1"):
        cell = f'tr[data-worker="{worker}"] td.hit'
        page.wait_for_function("([s]) => /%$/.test(document.querySelector(s).textContent) && "
                               "parseFloat(document.querySelector(s).textContent) > 0", arg=[cell], timeout=10_000)
    assert page.locator("#hit-chart canvas").count() == 1


def _command(page: Any, action: str, *, confirm: bool) -> None:
    page.click(f'div[data-model="{CANARY_MODEL}"] button[data-action="{action}"]')
    page.wait_for_selector("dialog[open]")
    page.click("#confirm-yes" if confirm else "#confirm-no")


def test_a_canary_is_promoted_then_rolled_back_after_confirmation(page: Any, console_stack: ThreadedStack) -> None:
    page.goto(console_stack.url + "/console/canaries")
    phase = f'div[data-model="{CANARY_MODEL}"] td.phase'
    page.wait_for_selector(phase)
    before = canary_phase(console_stack.url)
    _command(page, "promote", confirm=False)  # cancelled: nothing happens
    time.sleep(0.5)
    assert canary_phase(console_stack.url) == before
    _command(page, "promote", confirm=True)
    page.wait_for_function("([s]) => document.querySelector(s).textContent === 'promoted'", arg=[phase])
    assert canary_phase(console_stack.url) == "promoted"
    _command(page, "rollback", confirm=True)
    page.wait_for_function("([s]) => document.querySelector(s).textContent === 'rolled_back'", arg=[phase])
    assert canary_phase(console_stack.url) == "rolled_back"


def test_a_broken_edit_shows_its_error_by_path_and_a_valid_one_applies(page: Any,
                                                                      console_stack: ThreadedStack) -> None:
    page.goto(console_stack.url + "/console/policy")
    page.wait_for_function("() => document.querySelector('#policy-editor').value.length > 0")
    text = page.input_value("#policy-editor")
    assert "deployments:\n    - backend: local\n" in text
    page.fill("#policy-editor", text.replace("- backend: local\n", "- backend: nowhere\n", 1))
    problem = page.wait_for_selector("#policy-problems li")
    assert problem.get_attribute("data-path").endswith(".deployments[0].backend")
    assert "no backend named 'nowhere'" in problem.text_content()
    edited = text.replace("version: local-stack", "version: console-edit")
    page.fill("#policy-editor", edited)
    page.wait_for_function("() => document.querySelectorAll('#policy-problems li').length === 0")
    page.wait_for_function("() => document.querySelector('#policy-diff').textContent.includes('console-edit')")
    page.click("#policy-apply")
    page.click("#confirm-yes")
    page.wait_for_function("() => document.querySelector('#policy-status').textContent.includes('console-edit')")
    assert httpx.get(console_stack.url + "/admin/policy", headers=ADMIN).json()["version"] == "console-edit"
    assert page.text_content("#active-version") == "console-edit"
