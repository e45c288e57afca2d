"""One place that turns ``REDIS_URL`` into a client: a single Redis, a Redis Cluster or Sentinel.

``redis://`` / ``rediss://`` / ``unix://`` are redis-py's own URLs. Two more schemes name the
deployments operators run:

* ``redis+cluster://[user:password@]host:port[,host:port...][?...]`` (or ``rediss+cluster://``):
  a Redis Cluster (or Valkey cluster) reached through any of the seed nodes; the client learns
  the slot map and follows ``MOVED``/``ASK`` and failovers. Every script the gateway runs touches
  keys of one hash tag, so they all work on a cluster.
* ``redis+sentinel://[user:password@]host:port[,host:port...]/<service>[/<db>]``: the master Sentinel names for ``<service>``, found again after a
  failover. The password is the data nodes'; the Sentinels are asked without one.

Query options of the cluster and sentinel schemes: ``socket_timeout`` and
``socket_connect_timeout`` (seconds).

redis-py is imported only when a client is made: a gateway with no Redis never loads it
(~8 MiB of a serving process, docs/performance.md).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    import redis.asyncio as redis
    from redis.asyncio.cluster import RedisCluster

RedisClient: TypeAlias = "redis.Redis | RedisCluster"
"""A client the stores accept: one Redis (also through Sentinel) or a Redis Cluster."""

CLUSTER_SCHEMES = frozenset({"redis+cluster", "rediss+cluster"})
SENTINEL_SCHEMES = frozenset({"redis+sentinel"})


def connect(url: str, *, timeout_s: float | None = None, fail_fast: bool = False) -> RedisClient:
    """A client for ``url`` (see the module docstring for the schemes).

    Args:
        url: ``REDIS_URL``.
        timeout_s: Socket and connect timeout; redis-py's defaults when None.
        fail_fast: No retries on a failed call (the limit stores: an outage must cost
            microseconds per request, and their fallback decides what happens next).

    Raises:
        ValueError: a cluster or sentinel URL without hosts, or sentinel without a service.
    """
    import redis.asyncio as redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    options: dict[str, Any] = {}
    if timeout_s is not None:
        options.update(socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    if fail_fast:
        options["retry"] = Retry(NoBackoff(), 0)
    scheme = url.split("://", 1)[0].lower()
    if scheme in CLUSTER_SCHEMES:
        return _cluster(url, options)
    if scheme in SENTINEL_SCHEMES:
        return _sentinel(url, options)
    return redis.Redis.from_url(url, **options)


def store_errors() -> tuple[type[Exception], ...]:
    """What a failing Redis store raises: redis-py's ``RedisError``, ``OSError``, ``TimeoutError``.

    For ``except`` clauses of code that may run with no Redis client: before redis-py is
    imported nothing can raise its errors, so they are left out rather than imported.
    """
    exceptions = sys.modules.get("redis.exceptions")
    if exceptions is None:
        return (OSError, TimeoutError)
    return (exceptions.RedisError, OSError, TimeoutError)


def describe(url: str) -> str:
    """``url`` without its password, for logs and the admin API."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()


def _hosts(netloc: str) -> list[tuple[str, int]]:
    hosts = []
    for item in netloc.rsplit("@", 1)[-1].split(","):
        if not item:
            continue
        if item.startswith("["):  # [v6]:port
            host, _, port = item[1:].partition("]:")
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        hosts.append((host, int(port or 6379)))
    return hosts


def _credentials(url: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The URL's hosts part, with its user, password, TLS and query options folded into ``options``."""
    scheme, rest = url.split("://", 1)
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        user, _, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if password:
            options["password"] = unquote(password)
    if scheme.lower().startswith("rediss"):
        options["ssl"] = True
    for name, values in parse_qs(query).items():
        if name in ("socket_timeout", "socket_connect_timeout"):
            options[name] = float(values[-1])
    return netloc, {**options, "_path": path}


def _cluster(url: str, options: dict[str, Any]) -> RedisCluster:
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    netloc, options = _credentials(url, options)
    options.pop("_path")
    nodes = [ClusterNode(host, port) for host, port in _hosts(netloc)]
    if not nodes:
        raise ValueError("redis+cluster:// needs at least one host:port")
    return RedisCluster(startup_nodes=nodes, **options)


def _sentinel(url: str, options: dict[str, Any]) -> redis.Redis:
    from redis.asyncio.sentinel import Sentinel

    netloc, options = _credentials(url, options)
    path = [part for part in options.pop("_path").split("/") if part]
    hosts = _hosts(netloc)
    if not hosts or not path:
        raise ValueError("redis+sentinel:// needs host:port[,host:port...]/<service>[/<db>]")
    db = int(path[1]) if len(path) > 1 else 0
    sentinel_options = {k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")}
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_options)
    client: redis.Redis = sentinel.master_for(unquote(path[0]), db=db, **options)
    return client
