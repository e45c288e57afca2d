"""What the difficulty classifier reads of a conversation.

``router_text`` keeps the **last user turn** (up to ``TURN_CHARS``: its head and its tail) and,
before it, up to ``CONTEXT_CHARS`` of the **turns just before it** (user and assistant, newest
kept first, each as ``role: text``). A follow-up such as "now do it in Rust" is then scored with
the topic it continues, while a long history cannot drown the question or slow the decision.

System prompts are left out on purpose: they are usually one per application, long and
constant, so they would shift every score of that application alike; and the labelled
prompts the model is trained on have none. Tool results are left out too (role ``tool``).
"""

from __future__ import annotations

from collections.abc import Sequence

from backends.types import Message

TURN_CHARS = 8_000
"""Characters kept of the last user turn: the first 6,000 and the last 2,000."""
CONTEXT_CHARS = 600
"""Characters of earlier turns kept before the last user turn."""
_CONTEXT_ROLES = ("user", "assistant")


def router_text(messages: Sequence[Message], *, turn_chars: int = TURN_CHARS,
                context_chars: int = CONTEXT_CHARS) -> str:
    """The bounded text the classifier scores for one chat request.

    Args:
        messages: the request's messages, oldest first.
        turn_chars: characters kept of the last user turn (three quarters head, a quarter tail).
        context_chars: characters of the turns before it kept as context; 0 for none.
    """
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
    if last is None:
        return ""
    turn = _head_tail(messages[last].text(), turn_chars)
    context: list[str] = []
    budget = context_chars
    for message in reversed(messages[:last]):
        if budget <= 0:
            break
        if message.role not in _CONTEXT_ROLES:
            continue
        text = message.text().strip()
        if not text:
            continue
        line = f"{message.role}: {text}"
        context.append(line[-budget:])  # the end of a turn is what the next one answers
        budget -= len(context[-1])
    if not context:
        return turn
    return "\n".join(reversed(context)) + "\n\n" + turn


def _head_tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    return text[:head] + "\n" + text[len(text) - (limit - head):]
