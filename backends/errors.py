"""The one exception hierarchy of Switchyard.

Every layer raises these; only the edge (``gateway/errors.py``) turns them into HTTP, in the
OpenAI shape ``{"error": {"message", "type", "param", "code"}}``. They live in ``backends``
because it is the bottom layer: policies, router and gateway all import down to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar


class SwitchyardError(Exception):
    """Base of every error the gateway answers a client with."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})


# --- the client's fault -------------------------------------------------------------------


class InvalidRequestError(SwitchyardError):
    """The body is not a valid request (schema, types, values); ``param`` names the field."""

    status_code, error_type, code = 400, "invalid_request_error", "invalid_request"


class InvalidJSONError(SwitchyardError):
    """The body is not JSON, or not UTF-8."""

    status_code, error_type, code = 400, "invalid_request_error", "invalid_json"


class UnsupportedError(SwitchyardError):
    """The request is valid but the chosen backend kind cannot serve it."""

    status_code, error_type, code = 400, "invalid_request_error", "unsupported_operation"


class AuthenticationError(SwitchyardError):
    """No API key, or one the policy does not know."""

    status_code, error_type, code = 401, "invalid_request_error", "invalid_api_key"


class PermissionDeniedError(SwitchyardError):
    """The key is valid but may not use this model or endpoint."""

    status_code, error_type, code = 403, "permission_error", "model_not_allowed"


class ModelNotFoundError(SwitchyardError):
    """No public model of that name exists in the policy."""

    status_code, error_type, code = 404, "invalid_request_error", "model_not_found"


class NotFoundError(SwitchyardError):
    """No such route."""

    status_code, error_type, code = 404, "invalid_request_error", "not_found"


class MethodNotAllowedError(SwitchyardError):
    """The route exists but not with this HTTP method."""

    status_code, error_type, code = 405, "invalid_request_error", "method_not_allowed"


class RequestTooLargeError(SwitchyardError):
    """The body is over the configured size limit."""

    status_code, error_type, code = 413, "invalid_request_error", "request_too_large"


class RateLimitedError(SwitchyardError):
    """A limit of the gateway's own was hit; carries ``Retry-After``."""

    status_code, error_type, code = 429, "rate_limit_error", "rate_limit_exceeded"

    def __init__(
        self, message: str, *, retry_after_s: float, headers: Mapping[str, str] | None = None
    ) -> None:
        merged = {"retry-after": str(max(1, round(retry_after_s))), **(headers or {})}
        super().__init__(message, headers=merged)
        self.retry_after_s = retry_after_s


class HeadersTooLargeError(SwitchyardError):
    """The request line and headers are over the server's limit."""

    status_code, error_type, code = 431, "invalid_request_error", "headers_too_large"


# --- the upstream's fault -----------------------------------------------------------------


class UpstreamError(SwitchyardError):
    """The backend failed or answered something unusable (5xx, broken JSON, broken SSE)."""

    status_code, error_type, code = 502, "api_error", "upstream_error"


class UpstreamRateLimitedError(UpstreamError):
    """The backend itself answered 429; its ``Retry-After`` is passed on."""

    status_code, error_type, code = 429, "rate_limit_error", "upstream_rate_limited"


class UpstreamUnavailableError(UpstreamError):
    """The backend could not be reached, or has no healthy worker."""

    status_code, error_type, code = 503, "api_error", "upstream_unavailable"


class UpstreamTimeoutError(UpstreamError):
    """The backend did not answer (or stopped streaming) within its timeout."""

    status_code, error_type, code = 504, "api_error", "upstream_timeout"


class UpstreamRejectedError(UpstreamError):
    """The backend rejected the request as invalid (its 4xx); the client can fix it."""

    status_code, error_type, code = 400, "invalid_request_error", "upstream_rejected"


class AllBackendsFailedError(UpstreamError):
    """Every deployment tried for a request failed; ``errors`` holds each attempt."""

    code = "all_backends_failed"

    def __init__(self, errors: Sequence[SwitchyardError]) -> None:
        last = errors[-1] if errors else None
        detail = "; ".join(e.message for e in errors) or "no deployment was tried"
        super().__init__(f"every deployment failed: {detail}", headers=last.headers if last else None)
        self.errors = list(errors)


# --- a bound of the policy's ``bounds:`` section -------------------------------------------


class BoundExceededError(SwitchyardError):
    """A bound of the policy's ``bounds:`` section ended the request; ``bound`` names the field.

    Not an ``UpstreamError`` on purpose: the same request sent elsewhere would cross the same
    bound (and a deadline is spent already), so it is never retried; the gateway counts it in
    ``switchyard_bound_exceeded_total{bound}``.
    """

    status_code, error_type, code = 502, "api_error", "bound_exceeded"

    def __init__(self, message: str, *, bound: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message, headers=headers)
        self.bound = bound


class UpstreamTooLargeError(BoundExceededError):
    """The upstream's answer, one of its stream events, or its inflated body is over a bound."""

    status_code, error_type, code = 502, "api_error", "upstream_response_too_large"


class UpstreamDeadlineError(BoundExceededError):
    """The upstream call ran past its overall deadline (non-streamed) or its stream duration."""

    status_code, error_type, code = 504, "api_error", "upstream_deadline_exceeded"


class RequestTimeoutError(SwitchyardError):
    """The client did not send its request's line and headers in time."""

    status_code, error_type, code = 408, "invalid_request_error", "request_timeout"


class ServiceUnavailableError(SwitchyardError):
    """The gateway itself is not ready (no valid policy, shutting down)."""

    status_code, error_type, code = 503, "api_error", "service_unavailable"


class OverloadedError(ServiceUnavailableError):
    """Every worker that could serve is at its concurrency cap and no slot freed in time."""

    code = "overloaded"


def all_error_classes() -> list[type[SwitchyardError]]:
    """Every class of the hierarchy, for the test that checks each sets its three fields."""
    seen: list[type[SwitchyardError]] = []
    stack: list[type[SwitchyardError]] = [SwitchyardError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
