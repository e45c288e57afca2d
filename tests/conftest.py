"""Shared fixtures: a whole local stack (simulators + gateway) on real sockets.

The stack runs in its own thread and event loop, so tests can drive it with the synchronous
``openai`` client as well as the asynchronous one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, settings

# Property tests check correctness, not speed: on a loaded 2-core CI machine generation can be
# slow, and a timing failure there would say nothing about the code.
settings.register_profile("switchyard", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("switchyard")

from gateway.local_stack import LocalStack, start_local_stack
from tests.contracts.openai.hook import SpecCheckMiddleware, SpecLedger

T = TypeVar("T")

SPEC_LEDGER = SpecLedger()
"""What every stack of this session sent on the OpenAI routes, checked against OpenAI's spec
after each test (tests/contracts/openai/README.md); a violation fails the test that caused it."""


def _fail_on_spec_violations(when: str) -> None:
    problems = SPEC_LEDGER.check()
    if problems:
        listed = "\n".join(f"  {problem}" for problem in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        pytest.fail(f"the gateway sent {len(problems)} bodies that OpenAI's spec rejects "
                    f"(during {when}):\n{listed}{more}", pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    SPEC_LEDGER.reset()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    try:
        result = yield
    except BaseException as exc:
        problems = SPEC_LEDGER.check()  # the test failed anyway: say what else went wrong
        if problems:
            exc.add_note("OpenAI spec violations:\n" + "\n".join(map(str, problems[:20])))
        raise
    _fail_on_spec_violations("the test")
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    result = yield
    _fail_on_spec_violations("teardown")
    return result


@pytest.fixture
def spec_checks() -> SpecLedger:
    """The session's spec ledger: ``check()`` it, then read ``checks`` (this test's only)."""
    return SPEC_LEDGER


def eventually(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """``predicate()`` once it is truthy, or its last value after ``timeout`` seconds: for what
    the gateway does after a response is sent (its access line, a charge)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def _without_breakers(edit: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None]:
    """Most tests inject upstream failures on purpose, many in a row on one shared stack: an
    open circuit would turn the next test's requests into 503s. Breakers are tested on
    stacks that ask for them (``circuit_breakers=True``)."""

    def apply(document: dict[str, Any]) -> None:
        for backend in document["backends"].values():
            backend.setdefault("resilience", {})["circuit_breaker"] = {"enabled": False}
        if edit is not None:
            edit(document)

    return apply


class ThreadedStack:
    """A ``LocalStack`` living in a background event loop."""

    def __init__(self, workdir: Path, *, circuit_breakers: bool = False, **options: Any) -> None:
        if not circuit_breakers:
            options["edit_policy"] = _without_breakers(options.get("edit_policy"))
        options.setdefault("wrap_app", SpecCheckMiddleware.around(SPEC_LEDGER))
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="stack", daemon=True)
        self._thread.start()
        self.stack: LocalStack = self.run(start_local_stack(workdir, **options))
        self.url = self.stack.url

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the stack's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sim_stats(self, sim_url: str) -> dict[str, Any]:
        return httpx.get(sim_url + "/sim/stats").json()  # type: ignore[no-any-return]

    def sim_requests(self, sim_url: str) -> list[dict[str, Any]]:
        return httpx.get(sim_url + "/sim/requests").json()  # type: ignore[no-any-return]

    def close(self) -> None:
        try:
            self.run(self.stack.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedStack]:
    """The default demo stack: 2 SGLang sims, OpenAI and Anthropic sims, the gateway."""
    threaded = ThreadedStack(tmp_path_factory.mktemp("stack"))
    yield threaded
    threaded.close()
