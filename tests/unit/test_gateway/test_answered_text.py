"""``answered_text``: the words an answer's ``Echo`` reads are those of the turn it answers."""

from __future__ import annotations

import json

from gateway.moderation import answered_text
from gateway.wire import parse_chat, parse_embeddings, parse_text


def test_a_chat_answers_its_last_user_message_text_parts_included() -> None:
    body = {"model": "m", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is arson?"},
        {"role": "assistant", "content": "Setting fire on purpose."},
        {"role": "user", "content": [{"type": "text", "text": "And what is"}, {"type": "text", "text": "fraud?"}]},
        {"role": "assistant", "content": "Lying for gain."},
    ]}
    assert answered_text(parse_chat(json.dumps(body).encode())) == "And what is\nfraud?"  # the turn answered


def test_a_completion_answers_its_prompt_and_nothing_else_has_one() -> None:
    assert answered_text(parse_text(b'{"model": "m", "prompt": "Define arson:"}')) == "Define arson:"
    assert answered_text(parse_text(b'{"model": "m", "prompt": [1, 2, 3]}')) == ""  # token ids: no words
    assert answered_text(parse_embeddings(b'{"model": "m", "input": "arson"}')) == ""
    assert answered_text(parse_chat(b'{"model": "m", "messages": [{"role": "system", "content": "x"}]}')) == ""
