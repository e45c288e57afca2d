"""Screenshots of the operations console for docs/console.md: ``python -m bench.console_shots``.

Starts the local stack (two simulated SGLang workers, the OpenAI and Anthropic simulators)
with prices on every model, a canary rollout on ``gpt-4o-mini`` (its first step at 50%, guards judging after 10 requests of each version) and the access log
captured to a file (so the Policy page offers a replay), sends some traffic from two tenants
through the auto route and the local model, then logs in to ``/console`` in Debian's headless
Chromium (Playwright) and saves one PNG per page in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from gateway.local_stack import (
    ADMIN_KEY,
    DEMO_KEY,
    LOCAL_MODEL,
    OPENAI_MODEL,
    TEAM_B_KEY,
    LocalStack,
    start_local_stack,
)

PRICES = {LOCAL_MODEL: {"input": 0.05, "cached_input": 0.01, "output": 0.1},
          OPENAI_MODEL: {"input": 0.15, "output": 0.6},
          "claude-sonnet": {"input": 3.0, "cached_input": 0.3, "output": 15.0}}
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
EASY = ["hi", "thanks!", "what is 2+2?", "translate 'cat' to French", "say hello"]
HARD = ["Prove that there are infinitely many primes and explain each step rigorously.",
        "Design a distributed rate limiter with exactly-once accounting across regions; discuss failure modes.",
        "Derive the gradient of softmax cross-entropy and explain numerical stability tricks in detail."]


def _edit() -> Any:
    def edit(document: dict[str, Any]) -> None:
        for name, prices in PRICES.items():
            document["models"][name]["prices"] = prices
        document["models"][OPENAI_MODEL] = {
            "versions": {"v1": {"deployments": [{"backend": "openai", "model": "sim-gpt"}]},
                         "v2": {"deployments": [{"backend": "local", "model": "sim-llama"}]}},
            "stable": "v1", "prices": PRICES[OPENAI_MODEL],
            "canary": {"version": "v2", "plan": {"steps": [0.5, 1.0], "min_step_duration_s": 3600,
                                                  "min_requests_per_step": 1000, "guards": {"min_samples": 10}}}}
        document["observability"] = {"capture_content": True}
        for backend in document["backends"].values():
            backend.setdefault("resilience", {})["circuit_breaker"] = {"enabled": False}
    return edit


def _traffic(url: str, rounds: int) -> None:
    shared = "You are the support assistant of an online shop. Answer briefly and politely. " * 20
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(rounds):
            for key in (DEMO_KEY, TEAM_B_KEY):
                body = {"model": LOCAL_MODEL, "max_tokens": 16, "messages": [
                    {"role": "system", "content": shared}, {"role": "user", "content": f"order {i}: where is it?"}]}
                client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
            prompt = HARD[i % len(HARD)] if i % 3 == 0 else EASY[i % len(EASY)]
            client.post("/v1/chat/completions", headers={"authorization": f"Bearer {DEMO_KEY}"},
                        json={"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": prompt}]})
            for session in (f"a{i}", f"b{i}", f"c{i}"):  # sticky sessions spread over both versions
                client.post("/v1/chat/completions", json={"model": OPENAI_MODEL, "max_tokens": 8, "messages": [
                    {"role": "user", "content": "hello"}]}, headers={"authorization": f"Bearer {DEMO_KEY}",
                                                                     "x-switchyard-session": session})


def _shoot(url: str, out: Path, chromium: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    httpx.post(f"{url}/admin/canaries/{OPENAI_MODEL}/pause", headers=admin, json={"reason": "checking the p95"})
    httpx.post(f"{url}/admin/canaries/{OPENAI_MODEL}/resume", headers=admin, json={"reason": "p95 is fine"})
    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 820})
        page.goto(url + "/console/login")
        page.fill("input[name=key]", ADMIN_KEY)
        page.click("button[type=submit]")
        page.wait_for_url("**/console/workers")
        feeder = threading.Thread(target=_traffic, args=(url, 12), daemon=True)
        feeder.start()  # traffic while the page polls: the hit-rate lines move
        time.sleep(10)
        feeder.join()
        saved.append(_save(page, out / "workers.png"))
        page.goto(url + "/console/routes")
        time.sleep(6)
        saved.append(_save(page, out / "routes.png"))
        page.goto(url + "/console/canaries")
        page.wait_for_selector("td.phase")
        saved.append(_save(page, out / "canaries.png"))
        page.goto(url + "/console/policy")
        page.wait_for_function("() => document.querySelector('#policy-editor').value.length > 0")
        text = page.input_value("#policy-editor")
        page.fill("#policy-editor", text.replace("strong_share: 0.3", "strong_share: 1.5", 1))
        page.wait_for_selector("#policy-problems li")
        saved.append(_save(page, out / "policy-error.png"))
        page.fill("#policy-editor", text.replace("strong_share: 0.3", "strong_share: 0.2", 1))
        page.wait_for_function("() => document.querySelector('#policy-diff').textContent.includes('strong_share')")
        page.locator("#policy-diff").scroll_into_view_if_needed()
        saved.append(_save(page, out / "policy-diff.png"))
        page.click("#policy-replay")
        page.wait_for_selector("#policy-replay-out table", timeout=180_000)
        page.locator("#policy-replay-out").scroll_into_view_if_needed()
        saved.append(_save(page, out / "policy-replay.png"))
        page.goto(url + "/console/usage")
        page.wait_for_selector("#top-tenants td")
        saved.append(_save(page, out / "usage.png"))
        browser.close()
    return saved


def _save(page: Any, path: Path) -> Path:
    page.screenshot(path=str(path))
    return path


async def _serve(workdir: Path, ready: threading.Event, stop: asyncio.Event, holder: list[LocalStack]) -> None:
    access_log = workdir / "access.jsonl"
    stack = await start_local_stack(workdir, edit_policy=_edit(),
                                    settings_overrides={"access_log": str(access_log)})
    holder.append(stack)
    ready.set()
    await stop.wait()
    await stack.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console_shots", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/console"), help="where the PNGs go")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    loop = asyncio.new_event_loop()
    ready, holder = threading.Event(), list[LocalStack]()
    stop = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="switchyard-shots-") as workdir:
        task = loop.create_task(_serve(Path(workdir), ready, stop, holder))
        thread = threading.Thread(target=loop.run_until_complete, args=(task,), daemon=True)
        thread.start()
        if not ready.wait(60):
            raise SystemExit("the local stack did not start")
        try:
            _traffic(holder[0].url, 8)
            for path in _shoot(holder[0].url, args.out, args.chromium):
                print(f"{path} ({path.stat().st_size // 1024} kB)")
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
