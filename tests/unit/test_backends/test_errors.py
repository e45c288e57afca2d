from __future__ import annotations

import pytest

from backends.errors import (
    AllBackendsFailedError,
    RateLimitedError,
    SwitchyardError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    all_error_classes,
)


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_sets_status_type_and_code(cls: type[SwitchyardError]) -> None:
    assert 400 <= cls.status_code <= 599
    assert cls.status_code != 422, "OpenAI answers 400, never 422"
    assert cls.error_type and cls.code
    if cls is not SwitchyardError:
        # each subclass says something of its own, or it is a twin of its parent
        parent = cls.__mro__[1]
        assert (cls.status_code, cls.error_type, cls.code) != (
            parent.status_code, parent.error_type, parent.code)  # type: ignore[attr-defined]


def test_rate_limited_carries_retry_after() -> None:
    assert RateLimitedError("slow down", retry_after_s=2.4).headers == {"retry-after": "2"}
    assert RateLimitedError("slow down", retry_after_s=0.1).headers == {"retry-after": "1"}


def test_all_backends_failed_lists_every_attempt() -> None:
    errors = [UpstreamTimeoutError("a timed out"), UpstreamUnavailableError("b is down", headers={"retry-after": "3"})]
    combined = AllBackendsFailedError(errors)
    assert combined.errors == errors
    assert "a timed out" in combined.message and "b is down" in combined.message
    assert combined.headers == {"retry-after": "3"}
