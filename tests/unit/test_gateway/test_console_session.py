"""Console session cookies: signed, expiring, bound to the admin key; one secret per cluster
through a real Redis, so every replica accepts a cookie another one issued."""

from __future__ import annotations

from gateway.console.session import SESSION_TTL_S, ConsoleSessions
from policies.keys import hash_key
from tests.redis_support import connect_or_skip, unique_namespace

ADMIN = hash_key("sy-admin")


async def test_a_cookie_holds_until_it_expires_and_only_for_its_admin_key() -> None:
    sessions = ConsoleSessions(None, "test")
    cookie, session = await sessions.issue(ADMIN, now=1000.0)
    verified = await sessions.verify(cookie, ADMIN, now=1000.0 + SESSION_TTL_S - 1)
    assert verified is not None and verified.csrf == session.csrf
    assert await sessions.verify(cookie, ADMIN, now=1000.0 + SESSION_TTL_S) is None  # expired
    assert await sessions.verify(cookie, hash_key("sy-rotated"), now=1001.0) is None  # admin key rotated
    assert await ConsoleSessions(None, "test").verify(cookie, ADMIN, now=1001.0) is None  # another process
    expires, nonce, signature = cookie.split(".")
    assert await sessions.verify(f"{int(expires) + 60}.{nonce}.{signature}", ADMIN, now=1001.0) is None


async def test_replicas_share_the_secret_through_redis() -> None:
    client = await connect_or_skip()
    cluster = unique_namespace()
    try:
        one, two = ConsoleSessions(client, cluster), ConsoleSessions(client, cluster)
        cookie, session = await one.issue(ADMIN, now=1000.0)
        verified = await two.verify(cookie, ADMIN, now=1001.0)
        assert verified is not None and verified.csrf == session.csrf
        assert await ConsoleSessions(client, unique_namespace()).verify(cookie, ADMIN, now=1001.0) is None
    finally:
        await client.delete(f"switchyard:{cluster}:console:secret")
        await client.aclose()
