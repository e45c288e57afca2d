"""A client that goes away mid-stream cancels the upstream request at once."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx

from gateway.local_stack import DEMO_KEY, LOCAL_MODEL
from tests.conftest import ThreadedStack, eventually


def in_flight(stack: ThreadedStack) -> int:
    pools = stack.stack.app.state.gateway.runtime.pools
    return sum(w.in_flight for w in pools["local"].workers)


@contextlib.contextmanager
def first_chunk_then_leave(stack: ThreadedStack, body: dict[str, Any]) -> Iterator[None]:
    """A streamed request whose first chunk has arrived; leaving the block closes the connection."""
    with httpx.Client(timeout=10) as client, client.stream(
            "POST", stack.url + "/v1/chat/completions", json=body,
            headers={"authorization": f"Bearer {DEMO_KEY}"}) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()  # keep a reference: a dropped generator closes the response
        assert next(chunks).startswith(b"data: ")
        yield


def test_disconnect_mid_stream_cancels_upstream(stack: ThreadedStack) -> None:
    sims = stack.stack.sglang
    before = sum(stack.sim_stats(s.url)["cancelled"] for s in sims)
    body = {"model": LOCAL_MODEL, "stream": True, "max_tokens": 5000,
            "messages": [{"role": "user", "content": "Write a very long story."}]}
    with first_chunk_then_leave(stack, body):
        assert in_flight(stack) == 1
        started = time.monotonic()
    # leaving the block closes the connection; the simulator must see its request cancelled
    assert eventually(lambda: sum(stack.sim_stats(s.url)["cancelled"] for s in sims) == before + 1)
    assert time.monotonic() - started < 2.0, "5000 tokens at 2 ms each would take 10 s"
    assert eventually(lambda: in_flight(stack) == 0), "the worker's in-flight slot was released"
    running = sum(stack.sim_stats(s.url)["running"] for s in sims)
    assert running == 0


def test_disconnect_before_the_body_is_read_releases_everything(stack: ThreadedStack) -> None:
    """A client that sends a stream request and vanishes right after the headers."""
    sims = stack.stack.sglang
    before = sum(stack.sim_stats(s.url)["cancelled"] for s in sims)
    payload = (b'{"model": "%s", "stream": true, "max_tokens": 5000, '
               b'"messages": [{"role": "user", "content": "Another long story."}]}' % LOCAL_MODEL.encode())
    host, port = stack.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer " + DEMO_KEY.encode() + b"\r\ncontent-length: "
                     + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    assert eventually(lambda: sum(stack.sim_stats(s.url)["cancelled"] for s in sims) == before + 1)
    assert eventually(lambda: in_flight(stack) == 0)
