"""Reserve, then settle, through the real gateway and the real ``openai`` SDK (issue 15 findings
3, 6, 10 and 11): budgets hold under concurrency and for n > 1, absurd upstream usage is clamped
without breaking the answer, budgets survive a reload without Redis, and names cannot collide."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam

from gateway.local_stack import ADMIN_KEY, LOCAL_MODEL
from policies.keys import hash_key
from tests.conftest import ThreadedStack
from tests.redis_support import REDIS_URL, require_redis

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
PRICES = {"input": 10.0, "output": 30.0}  # a 25-token prompt with 100 output tokens: $0.00325


def add_tenant(document: dict[str, Any], tenant: str, key: str, plain: str, **config: Any) -> None:
    keys = document["tenants"].setdefault(tenant, {"models": ["*"], "keys": []})["keys"]
    keys.append({"name": key, "sha256": hash_key(plain), **config.pop("key_config", {})})
    document["tenants"][tenant].update(config)


def usage(url: str, tenant: str, key: str | None = None) -> dict[str, Any]:
    params: dict[str, str | int] = {"tenant": tenant, "days": 1, **({"key": key} if key else {})}
    response = httpx.get(url + "/admin/usage", params=params, headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def settled(url: str, tenant: str, requests: int, timeout: float = 5.0) -> dict[str, Any]:
    """The tenant's report once ``requests`` charges have landed (settling runs in a task)."""
    report: dict[str, Any] = {}
    for _ in range(int(timeout / 0.05)):
        report = usage(url, tenant)
        if sum(r["requests"] for r in report["rows"]) >= requests:
            break
        time.sleep(0.05)
    return report


@pytest.fixture(scope="module")
def budgets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    def edit(document: dict[str, Any]) -> None:
        document["models"][LOCAL_MODEL]["prices"] = PRICES
        add_tenant(document, "usd", "usd", "sy-usd", budgets={"daily_usd": 0.0155})
        add_tenant(document, "n128", "n128", "sy-n128", budgets={"daily_usd": 0.0155})
        add_tenant(document, "strict", "strict", "sy-strict",
                   budgets={"daily_usd": 0.0155, "max_tokens_overflow": "reject"})
        add_tenant(document, "spent", "spent", "sy-spent", budgets={"daily_tokens": 60})
        # issue 15 finding 11: both keys used to be "key:a:b:c"
        add_tenant(document, "a", "b:c", "sy-a-bc", key_config={"rate_limits": {"rpm": 1}})
        add_tenant(document, "a:b", "c", "sy-ab-c", key_config={"rate_limits": {"rpm": 1}})

    stack = ThreadedStack(tmp_path_factory.mktemp("reservations"), sglang_workers=1, edit_policy=edit)
    yield stack
    stack.close()


def test_concurrent_requests_cannot_overshoot_a_dollar_budget(budgets: ThreadedStack) -> None:
    # 50 concurrent max_tokens=100 requests against $0.0155 a day were all admitted: 10x the budget
    async def burst() -> list[int]:
        client = openai.AsyncOpenAI(base_url=budgets.url + "/v1", api_key="sy-usd", max_retries=0)

        async def one(i: int) -> int:
            try:
                answer = await client.chat.completions.create(
                    model=LOCAL_MODEL, max_tokens=100, messages=[{"role": "user", "content": f"story {i}"}])
            except openai.RateLimitError as exc:
                assert isinstance(exc.body, dict) and exc.body["code"] == "insufficient_quota"
                return -1
            assert answer.usage is not None
            return answer.usage.completion_tokens

        try:
            return await asyncio.gather(*(one(i) for i in range(50)))
        finally:
            await client.close()

    outcomes = asyncio.run(burst())
    served = [o for o in outcomes if o >= 0]
    assert 0 < len(served) < 50 and -1 in outcomes
    report = settled(budgets.url, "usd", len(served))
    assert report["total_usd"] <= 0.0155, f"charged {report['total_usd']} against a $0.0155 budget"
    assert report["total_usd"] > 0.0155 / 2, "what the budget covers is still served"


def test_n_choices_are_reserved_and_max_tokens_clamped_to_the_budget(budgets: ThreadedStack) -> None:
    # n=128, max_tokens=1000 near the end of a budget charged 248x what was left
    client = openai.OpenAI(base_url=budgets.url + "/v1", api_key="sy-n128", max_retries=0)
    client.chat.completions.create(model=LOCAL_MODEL, max_tokens=1000, n=128,
                                   messages=[{"role": "user", "content": "many answers"}])
    sent = budgets.sim_requests(budgets.stack.sglang[0].url)[-1]["body"]
    assert sent["n"] == 128
    # what is left after a ~25-token prompt ($0.00025) covers 3 tokens x 128 choices at $30/M
    assert 1 <= sent["max_tokens"] <= 3
    strict = openai.OpenAI(base_url=budgets.url + "/v1", api_key="sy-strict", max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        strict.chat.completions.create(model=LOCAL_MODEL, max_tokens=1000, n=128,
                                       messages=[{"role": "user", "content": "many answers"}])
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "insufficient_quota"
    assert "1,000 output tokens x 128 choice(s)" in body["message"] and "tenant:strict" in body["message"]
    report = settled(budgets.url, "n128", 1)
    assert 0 < report["total_usd"] <= 0.0155


def test_colons_in_tenant_and_key_names_do_not_share_buckets(budgets: ThreadedStack) -> None:
    for key in ("sy-a-bc", "sy-ab-c"):  # each key has 1 request a minute of its own
        client = openai.OpenAI(base_url=budgets.url + "/v1", api_key=key, max_retries=0)
        client.chat.completions.create(model=LOCAL_MODEL, max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert usage(budgets.url, "a", "b:c")["scope"] != usage(budgets.url, "a:b", "c")["scope"]


def test_budgets_survive_a_reload_of_the_limits_section_without_redis(budgets: ThreadedStack) -> None:
    # any change of limits: used to build new in-memory stores: an exhausted budget was 200 again
    client = openai.OpenAI(base_url=budgets.url + "/v1", api_key="sy-spent", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        for _ in range(10):  # 60 tokens a day: the second or third request is refused
            client.chat.completions.create(model=LOCAL_MODEL, max_tokens=8,
                                           messages=[{"role": "user", "content": "spend"}])
    before = usage(budgets.url, "spent")["total_tokens"]
    document = yaml.safe_load(budgets.stack.policy_path.read_text())
    document["limits"] = {"redis_timeout_s": 0.3}
    pushed = httpx.post(budgets.url + "/admin/policy", content=yaml.safe_dump(document), headers=ADMIN, timeout=30)
    assert pushed.status_code == 200 and pushed.json()["applied"], pushed.text
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=LOCAL_MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert usage(budgets.url, "spent")["total_tokens"] == before


# --- an upstream that lies about usage (finding 6), on Redis ---------------------------------

LIES = {"huge": 10**12, "negative": -(10**9), "overflow": 2**64}


async def lying_upstream() -> tuple[web.AppRunner, str]:
    """An OpenAI-compatible upstream whose usage says what the prompt asks: ``lie:<name>``."""
    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "liar", "object": "model"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        lie = LIES[body["messages"][-1]["content"].split(":", 1)[1]]
        usage_ = {"prompt_tokens": lie, "completion_tokens": lie, "total_tokens": lie}
        base = {"id": "chatcmpl-liar", "created": 1, "model": "liar"}
        if not body.get("stream"):
            return web.json_response({**base, "object": "chat.completion", "usage": usage_, "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "fine thanks"}}]})
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        chunk = {**base, "object": "chat.completion.chunk"}
        for delta, finish in (({"role": "assistant", "content": "fine"}, None), ({"content": " thanks"}, "stop")):
            event = {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
        await response.write(f"data: {json.dumps({**chunk, 'choices': [], 'usage': usage_})}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def liar_policy(url: str, tenant: str) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        document["backends"]["liar"] = {"kind": "openai", "base_url": url + "/v1", "health_interval_s": 5.0}
        document["models"]["liar"] = {"deployments": [{"backend": "liar", "model": "liar"}],
                                      "prices": {"input": 3.0, "output": 15.0}}
        add_tenant(document, tenant, "k", f"sy-{tenant}", budgets={"daily_usd": 100.0})
    return edit


def test_absurd_upstream_usage_is_clamped_and_never_breaks_the_answer(tmp_path: Path) -> None:
    require_redis()
    tenant = f"liar{uuid.uuid4().hex[:8]}"
    loop = asyncio.new_event_loop()
    runner, url = loop.run_until_complete(lying_upstream())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stack = ThreadedStack(tmp_path, sglang_workers=1, edit_policy=liar_policy(url, tenant),
                          settings_overrides={"redis_url": REDIS_URL})
    try:
        client = openai.OpenAI(base_url=stack.url + "/v1", api_key=f"sy-{tenant}", max_retries=0)
        for lie in LIES:
            messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": f"lie:{lie}"}]
            answer = client.chat.completions.create(model="liar", max_tokens=50, messages=messages)
            assert answer.choices[0].message.content == "fine thanks"
            stream = client.chat.completions.create(model="liar", max_tokens=50, messages=messages, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "fine thanks"
        report = settled(stack.url, tenant, 6)
        assert sum(r["requests"] for r in report["rows"]) == 6, "no charge is lost (2**64 used to be)"
        row = report["rows"][0]
        # each charge is at most what the request could use: 50 output tokens, a prompt of
        # at most 16x its estimate + 4096 tokens; never negative
        assert 0 <= row["output_tokens"] <= 6 * 50
        assert 0 <= row["input_tokens"] <= 6 * (16 * 40 + 4096)
        assert 0 <= report["total_usd"] < 1.0, "10**12 tokens used to charge $3M"
        exposition = httpx.get(stack.url + "/metrics", timeout=10).text
        clamped = next(float(line.split()[-1]) for line in exposition.splitlines()
                       if line.startswith("switchyard_usage_clamped_total"))
        assert clamped == 6  # each lie counted where operators look
        other = openai.OpenAI(base_url=stack.url + "/v1", api_key="sy-demo-key", max_retries=0)
        assert other.chat.completions.create(model=LOCAL_MODEL, max_tokens=2,
                                             messages=[{"role": "user", "content": "ok"}]).choices
    finally:
        stack.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()
