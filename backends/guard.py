"""The guard model's wire formats: ask a guard about one text, read its labels.

``ask_guard`` speaks either format (``policies/moderation/guard.py`` says what each means):

- ``llama_guard``: ``POST {url}/v1/chat/completions`` with the text as the last message (``user``
  for a request, ``assistant`` after a placeholder user turn for an answer: Llama Guard judges
  the last turn), ``temperature: 0``, ``max_tokens: 16``; the answer's content is ``safe`` or
  ``unsafe`` then a line of comma-separated ``S<n>`` codes.
- ``openai_moderation``: ``POST {url}/v1/moderations`` with ``{"model", "input"}``; the labels are
  the ``results[0].categories`` that are true.

Failures (refused connection, timeout, a non-2xx answer, a body that is not the format) raise
``UpstreamError`` subclasses, so the caller decides fail-open or fail-closed in one place.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from backends.errors import (
    UpstreamDeadlineError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamTooLargeError,
    UpstreamUnavailableError,
)
from backends.http import Timeouts, read_body

__all__ = ["GuardAnswer", "ask_guard", "parse_llama_guard"]

_CODES = re.compile(r"S\d{1,2}")
ANSWER_PLACEHOLDER = "(the user's request)"
"""The user turn before an answer judged alone (Llama Guard reads a conversation)."""
GUARD_BODY_BYTES = 256 * 1024
"""A guard's answer is a few hundred bytes (a moderations result with its scores, a few KB);
no more than this is read, so a broken or hostile guard cannot fill the gateway's memory."""


@dataclass(frozen=True, slots=True)
class GuardAnswer:
    """What the guard said: unsafe or not, and its labels (``S10``, ``hate/threatening``)."""

    unsafe: bool
    labels: tuple[str, ...]


def parse_llama_guard(content: str) -> GuardAnswer:
    """``safe`` / ``unsafe\\nS1,S10`` as a ``GuardAnswer``.

    Raises:
        UpstreamError: the first line is neither ``safe`` nor ``unsafe``.
    """
    lines = content.strip().splitlines()
    verdict = lines[0].strip().lower() if lines else ""
    if verdict == "safe":
        return GuardAnswer(False, ())
    if verdict == "unsafe":
        codes = _CODES.findall(lines[1]) if len(lines) > 1 else []
        return GuardAnswer(True, tuple(dict.fromkeys(codes)))
    raise UpstreamError(f"the guard answered {verdict[:40]!r}, neither 'safe' nor 'unsafe'")


async def ask_guard(kind: Literal["llama_guard", "openai_moderation"], url: str, model: str, text: str,
                    role: Literal["user", "assistant"], *, timeout_s: float, api_key: str | None = None) -> GuardAnswer:
    """One guard call (a short-lived connection: guard calls are rare, only borderline text).

    Raises:
        UpstreamTimeoutError: no answer within ``timeout_s``.
        UpstreamUnavailableError: the guard could not be reached.
        UpstreamError: it answered an error status or something not in its format.
    """
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    if kind == "llama_guard":
        messages = [{"role": "user", "content": text}] if role == "user" else [
            {"role": "user", "content": ANSWER_PLACEHOLDER}, {"role": "assistant", "content": text}]
        path, body = "/v1/chat/completions", {"model": model, "messages": messages, "temperature": 0,
                                              "max_tokens": 16, "stream": False}
    else:
        path, body = "/v1/moderations", {"model": model, "input": text}
    bounds = Timeouts(first_byte=timeout_s, idle=timeout_s, total=timeout_s, max_body_bytes=GUARD_BODY_BYTES)
    started = asyncio.get_running_loop().time()
    try:
        async with asyncio.timeout(timeout_s), aiohttp.ClientSession() as session, \
                session.post(url.rstrip("/") + path, json=body, headers=headers) as response:
            if response.status >= 400:
                raise UpstreamError(f"the guard answered HTTP {response.status}")
            raw = await read_body(response, bounds, "the guard", started)
    except (TimeoutError, UpstreamDeadlineError):
        raise UpstreamTimeoutError(f"the guard did not answer within {timeout_s} s") from None
    except UpstreamTooLargeError:
        raise UpstreamError(f"the guard's answer is over {GUARD_BODY_BYTES} bytes") from None
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailableError(f"the guard could not be reached: {type(exc).__name__}") from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise UpstreamError("the guard's answer is not JSON") from None
    return _read(kind, data)


def _read(kind: str, data: Any) -> GuardAnswer:
    try:
        if kind == "llama_guard":
            return parse_llama_guard(str(data["choices"][0]["message"]["content"]))
        result = data["results"][0]
        labels = tuple(name for name, hit in result["categories"].items() if hit is True)
        return GuardAnswer(bool(result.get("flagged", bool(labels))), labels)
    except (KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamError("the guard's answer is not in its format") from None
