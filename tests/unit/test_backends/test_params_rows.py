"""The parameter table is walked from rows made once per request type (issue 17)."""

from __future__ import annotations

from backends.params import CHAT_TABLE, _rows, fit_params
from gateway.wire import parse_chat

_BODY = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 8, "store": true}'


def test_rows_cover_the_table_know_declared_fields_and_are_made_once() -> None:
    request = parse_chat(_BODY)
    rows = _rows(request)
    fields = set(type(request.params).__struct_fields__)
    assert [name for name, _, _ in rows] == list(CHAT_TABLE)
    assert all(declared == (name in fields) for name, _, declared in rows)
    assert _rows(parse_chat(_BODY)) is rows


def test_declared_and_extra_parameters_are_both_read() -> None:
    request = parse_chat(_BODY)
    # max_tokens is a declared field, store an extra: OpenAI takes both, SGLang drops store
    kept = fit_params(request, "openai")
    dropped = fit_params(request, "sglang")
    assert (kept.params.max_tokens, kept.extra.get("store")) == (8, True)
    assert dropped.params.max_tokens == 8 and "store" not in dropped.extra
