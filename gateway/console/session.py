"""Console sessions: a short-lived signed cookie given for the admin key, and CSRF tokens.

The admin key is typed once into the login form; the browser then holds only a cookie
``<expires>.<nonce>.<signature>`` (HttpOnly, SameSite=Strict, Path=/console). The signature
is an HMAC under a key derived from a secret and the policy's ``admin_key_sha256``: rotating
the admin key ends every session, and the secret keeps the cookie from being forged by
someone who has read the policy document (which holds the key's hash). The secret is shared
through Redis when the gateway has one (any replica accepts the cookie), else it is the
process's own (a restart logs everyone out).

Every change (a POST) needs, besides the cookie, the header ``x-csrf-token`` carrying a token
derived from the session (the page has it in a ``<meta>``; a cross-site page cannot read it)
and, when the browser sends one, an ``Origin`` of this very host.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar import Request

from backends.errors import AuthenticationError, PermissionDeniedError
from gateway.state import Gateway

if TYPE_CHECKING:
    import redis.asyncio as redis

log = logging.getLogger("switchyard.console")

COOKIE = "sy_console"
"""The session cookie's name."""
CSRF_HEADER = "x-csrf-token"
"""The header every console change must carry (the token is in the page's ``<meta>``)."""
SESSION_TTL_S = 30 * 60
"""How long a session lasts; it is not renewed: after it, log in again."""
_STATE = "console_sessions"


class CsrfError(PermissionDeniedError):
    """A console change without the session's CSRF token, or from another origin."""

    status_code, error_type, code = 403, "permission_error", "csrf_failed"


@dataclass(frozen=True, slots=True)
class Session:
    """A verified session: its nonce (what the CSRF token is bound to) and its end."""

    nonce: str
    expires: int
    csrf: str


class ConsoleSessions:
    """Issues and checks session cookies and CSRF tokens for one app."""

    def __init__(self, redis_client: redis.Redis | None, cluster: str) -> None:
        self._redis = redis_client
        self._redis_key = f"switchyard:{cluster}:console:secret"
        self._secret: bytes | None = None
        self._fallback = secrets.token_bytes(32)
        """This process's secret while Redis cannot be reached (its sessions hold here only)."""

    async def secret(self) -> bytes:
        """The signing secret: one per cluster in Redis (set once, first writer wins), else
        one per process."""
        if self._secret is not None:
            return self._secret
        candidate = secrets.token_bytes(32)
        if self._redis is not None:
            try:
                await self._redis.set(self._redis_key, candidate, nx=True)
                stored = await self._redis.get(self._redis_key)
                if isinstance(stored, bytes) and len(stored) == 32:
                    candidate = stored
            except Exception as exc:  # noqa: BLE001 - Redis down: sessions of this process only
                log.warning("console: cannot share the session secret through Redis (%s); "
                            "sessions hold on this replica only", exc)
                return self._fallback  # not kept: the shared one is tried again next time
        self._secret = candidate
        return candidate

    async def issue(self, admin_sha256: str, now: float | None = None) -> tuple[str, Session]:
        """A new cookie value and its session."""
        expires = int((time.time() if now is None else now) + SESSION_TTL_S)
        nonce = secrets.token_hex(16)
        key = await self._key(admin_sha256)
        return f"{expires}.{nonce}.{_sign(key, f'{expires}.{nonce}')}", Session(nonce, expires, _csrf(key, nonce))

    async def verify(self, cookie: str | None, admin_sha256: str, now: float | None = None) -> Session | None:
        """The session a cookie proves, or None (absent, forged, expired, or for an older admin key)."""
        if not cookie or cookie.count(".") != 2:
            return None
        expires_text, nonce, signature = cookie.split(".")
        if not expires_text.isdigit():
            return None
        key = await self._key(admin_sha256)
        if not hmac.compare_digest(signature, _sign(key, f"{expires_text}.{nonce}")):
            return None
        expires = int(expires_text)
        if expires <= (time.time() if now is None else now):
            return None
        return Session(nonce, expires, _csrf(key, nonce))

    async def _key(self, admin_sha256: str) -> bytes:
        return hmac.new(await self.secret(), b"console-session:" + admin_sha256.encode(), hashlib.sha256).digest()


def _sign(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _csrf(key: bytes, nonce: str) -> str:
    return hmac.new(key, b"csrf:" + nonce.encode(), hashlib.sha256).hexdigest()


def sessions_of(request: Request[Any, Any, Any]) -> ConsoleSessions:
    """The app's session keeper, made on first use (the Redis client exists only once the
    app has started)."""
    state = request.app.state
    found = state.get(_STATE)
    if isinstance(found, ConsoleSessions):
        return found
    gateway: Gateway = state.gateway
    manager = state.get("policies")
    made = ConsoleSessions(getattr(manager, "redis_client", None), gateway.settings.cluster)
    state[_STATE] = made
    return made


def same_origin(request: Request[Any, Any, Any]) -> bool:
    """True unless the browser says the request comes from another origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


async def authorize(request: Request[Any, Any, Any], *, change: bool) -> Session | None:
    """Let the admin key (``Authorization: Bearer``) or a console session through.

    A session's change also needs the CSRF header and a same-origin request. Returns the
    session, or None for the admin key. Raises 404 when the policy sets no admin key (the
    console does not exist then), 401 without either credential, 403 on a CSRF failure.
    """
    gateway: Gateway = request.app.state.gateway
    runtime = gateway.runtime
    admin = runtime.policy.admin_key_sha256
    authorization = request.headers.get("authorization")
    if authorization or admin is None:
        runtime.keyring.check_admin(authorization, admin)
        return None
    session = await sessions_of(request).verify(request.cookies.get(COOKIE), admin)
    if session is None:
        raise AuthenticationError("Log in to the console (or send the admin key as 'Authorization: Bearer <key>').")
    if change:
        token = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(token.encode(), session.csrf.encode()) or not same_origin(request):
            raise CsrfError("This change needs the console's CSRF token (x-csrf-token) "
                                        "from a page of this console.")
    return session
