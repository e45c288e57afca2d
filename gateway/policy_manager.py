"""Live policy changes: from the file, the admin API or another replica, applied atomically.

Every change goes through ``apply``: parse and validate, compile a whole new ``Runtime``,
health-check its new workers, then swap it in with one assignment. Anything that fails
before the swap leaves the old policy serving and raises ``PolicyError``. The replaced
runtime finishes its in-flight requests (``drain``) before it closes what it alone owns.

The latest change wins, wherever it comes from: a changed file is applied and published to
Redis; a pushed policy (``POST /admin/policy``) too; a replica follows what others publish.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.accounting import limit_stores, limits_client
from gateway.policy_sync import PolicySync, PublishedPolicy
from gateway.runtime import Runtime, policy_digest
from gateway.settings import Settings
from gateway.state import Gateway
from policies.canary import CanaryController
from policies.document import Policy
from policies.limits_config import LimitsStoreConfig
from policies.loader import PolicyError, parse_policy
from policies.moderation.scorers import ModerationModels
from policies.rate_limit import RateLimiter
from policies.redis_client import RedisClient, connect
from policies.spend import UsageLedger
from router.tiering import Scorer

log = logging.getLogger("switchyard.policy")


@dataclass(frozen=True, slots=True)
class ActivePolicy:
    """What ``GET /admin/policy`` shows."""

    version: str
    digest: str
    source: str
    """``file``, ``api`` or ``redis`` (another replica's change)."""
    applied_at: float
    text: str
    revision: int | None
    """The Redis revision this replica has seen, when Redis is used."""


@dataclass(eq=False)
class _LimitStores:
    """Rate limiter and ledger, kept across policy changes unless ``limits`` itself changes."""

    config: LimitsStoreConfig
    client: RedisClient | None
    stores: tuple[RateLimiter, UsageLedger]

    async def aclose(self) -> None:
        close = getattr(self.stores[1], "close", None)
        if close is not None:  # releases the charge journal; kept on disk while charges wait
            close()
        if self.client is not None:
            await self.client.aclose()


@dataclass(frozen=True, slots=True)
class _FileState:
    stat: tuple[int, int, int]
    digest: str


class PolicyManager:
    """Owns what outlives a policy (Redis clients, the control-plane HTTP client, the limit
    stores) and turns policy documents into the gateway's active runtime."""

    def __init__(self, gateway: Gateway, settings: Settings, scorer: Scorer | None, scorer_error: str,
                 moderation: ModerationModels | None = None, moderation_error: str = "") -> None:
        self._gateway = gateway
        self._settings = settings
        self._scorer, self._scorer_error = scorer, scorer_error
        self._moderation, self._moderation_error = moderation, moderation_error
        self._lock = asyncio.Lock()
        self._control = httpx.AsyncClient(timeout=httpx.Timeout(5.0), limits=httpx.Limits(max_connections=64))
        self._redis = connect(settings.redis_url) if settings.redis_url else None
        self._limits: _LimitStores | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._retiring: dict[Runtime, _LimitStores | None] = {}
        self._file: _FileState | None = None
        self._rejected_file: str | None = None
        self.sync = PolicySync(self._redis, settings.cluster, self._follow) if self._redis is not None else None
        self.active: ActivePolicy | None = None
        self.canaries: CanaryController | None = None
        """The process's canary controller, handed to every runtime built here."""

    @property
    def redis_client(self) -> RedisClient | None:
        return self._redis

    async def start(self) -> None:
        """Load the file, catch up with a newer published policy, then watch both."""
        text = self._read_file()
        if text is not None:
            try:
                await self.apply(text, "file", publish=False)
            except PolicyError as exc:
                self._gateway.load_error = exc.message
        if self.sync is not None:
            await self._catch_up()
            self._spawn(self.sync.run(), "policy-sync")
        if self._settings.policy_poll_s > 0:
            self._spawn(self._watch_file(), "policy-file")

    async def apply(self, text: str, source: str, *, publish: bool = True) -> bool:
        """Make ``text`` the active policy; False if it already is. Raises ``PolicyError``
        (and changes nothing) if it is invalid or cannot run here."""
        async with self._lock:
            try:
                changed = await self._apply(text, source)
            except PolicyError as exc:
                self._gateway.telemetry.metrics.policy_reloads.labels(source, "rejected").inc()
                log.error("policy from %s refused, the active one keeps serving: %s", source, exc.message)
                raise
        if changed and publish and self.sync is not None and self.active is not None:
            try:
                revision = await self.sync.publish(text, self.active.digest, source)
                self.active = _with_revision(self.active, revision)
            except Exception as exc:  # noqa: BLE001 - applied here; others catch up on the next change
                log.warning("policy applied here but not published to Redis: %s", exc)
        return changed

    async def _apply(self, text: str, source: str) -> bool:
        policy = parse_policy(text, f"policy from {source}")
        digest = policy_digest(policy)
        gateway = self._gateway
        current = gateway.runtime if gateway.has_runtime else None
        revision = self.sync.seen_revision if self.sync else None
        if current is not None and current.digest == digest:
            self.active = ActivePolicy(policy.version, digest, source, time.time(), text, revision)
            return False
        limits, retired_limits = self._limit_stores(policy)
        try:
            runtime = Runtime.build(
                policy, control=self._control, max_connections=self._settings.max_connections_per_backend,
                redis_client=self._redis, scorer=self._scorer, scorer_error=self._scorer_error,
                limit_stores=limits.stores, previous=current, moderation_classifier=self._moderation,
                moderation_error=self._moderation_error, canaries=self.canaries)
        except BaseException:
            if limits is not self._limits:
                await limits.aclose()
            raise
        try:
            await runtime.start()
        except BaseException:
            await runtime.aclose()
            if limits is not self._limits:
                await limits.aclose()
            raise
        previous = gateway.swap(runtime)
        self._limits = limits
        self.active = ActivePolicy(policy.version, digest, source, time.time(), text, revision)
        gateway.telemetry.metrics.policy_reloads.labels(source, "applied").inc()
        log.info("policy %s (%s) from %s is active: %s", policy.version, digest[:12], source,
                 runtime.readiness().detail)
        if previous is not None:
            self._spawn(self._retire(previous, retired_limits), "policy-retire")
        return True

    def _limit_stores(self, policy: Policy) -> tuple[_LimitStores, _LimitStores | None]:
        """The current stores if ``limits`` is unchanged (limits and spend carry on), else new ones.

        Without Redis the process's stores are the only record of usage, budgets and buckets:
        they are always carried over (a new ``limits`` section changes how Redis is used, and
        there is none). With Redis the new stores take over the charges still waiting for it."""
        current = self._limits
        if current is not None and (current.config == policy.limits or current.client is None
                                    and not self._settings.redis_url):
            return current, None
        client = limits_client(self._settings.redis_url, policy.limits) if self._settings.redis_url else None
        stores = limit_stores(client, policy.limits)
        if current is not None:
            take_over = getattr(stores[1], "take_over", None)
            if take_over is not None:
                take_over(current.stores[1])
        return _LimitStores(policy.limits, client, stores), current

    async def _retire(self, runtime: Runtime, limits: _LimitStores | None) -> None:
        self._retiring[runtime] = limits
        if not await runtime.drain(self._settings.drain_timeout_s):
            log.warning("policy %s: %d requests still running after %.0fs; closing anyway",
                        runtime.policy.version, runtime.active, self._settings.drain_timeout_s)
        del self._retiring[runtime]
        await runtime.aclose()
        if limits is not None:
            await limits.aclose()

    # --- sources ----------------------------------------------------------------------------

    def _read_file(self) -> str | None:
        path = self._settings.policy_path
        try:
            stat = os.stat(path)
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            self._gateway.load_error = f"cannot read {path}: {exc.strerror}"
            log.error("%s", self._gateway.load_error)
            return None
        self._file = _FileState(_stat_key(stat), hashlib.sha256(text.encode()).hexdigest())
        return text

    async def _watch_file(self) -> None:
        """Poll the file (this follows a Kubernetes ConfigMap's symlink swap, where inotify
        on the path would not); apply and publish it when its content changes."""
        path = self._settings.policy_path
        while True:
            await asyncio.sleep(self._settings.policy_poll_s)
            try:
                stat = _stat_key(os.stat(path))
                if self._file is not None and stat == self._file.stat:
                    continue
                text = Path(path).read_text(encoding="utf-8")
            except OSError:
                continue  # mid-swap or removed: look again next time
            digest = hashlib.sha256(text.encode()).hexdigest()
            unchanged = self._file is not None and digest == self._file.digest
            self._file = _FileState(stat, digest)
            if unchanged or digest == self._rejected_file:
                continue
            try:
                await self.apply(text, "file")
                self._rejected_file = None
            except PolicyError:
                self._rejected_file = digest  # logged once; retried when the file changes again
            except Exception:
                log.exception("applying the changed policy file failed")

    async def _catch_up(self) -> None:
        """At start: adopt the published policy if it is newer than the file."""
        assert self.sync is not None
        try:
            published = await self.sync.latest()
        except Exception as exc:  # noqa: BLE001 - Redis down at start: serve the file
            log.warning("policy sync: cannot read the published policy (%s); serving the file", exc)
            return
        if published is None:
            return
        file_time = self._file_mtime()
        self.sync.seen_revision = published.revision
        if published.published_at > file_time or not self._gateway.has_runtime:
            await self._follow(published)

    async def _follow(self, published: PublishedPolicy) -> None:
        gateway = self._gateway
        if gateway.has_runtime and gateway.runtime.digest == published.digest:
            return
        try:
            await self.apply(published.text, "redis", publish=False)
        except PolicyError:
            pass  # logged and counted by apply; the next published change may fix it
        except Exception:
            log.exception("applying the published policy failed")

    def _file_mtime(self) -> float:
        try:
            return os.stat(self._settings.policy_path).st_mtime
        except OSError:
            return 0.0

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop watching, close the active runtime, then everything process-wide."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for runtime, limits in list(self._retiring.items()):  # shutting down: no more waiting
            await runtime.aclose()
            if limits is not None:
                await limits.aclose()
        self._retiring.clear()
        if self._gateway.has_runtime:
            await self._gateway.runtime.aclose()
        if self._limits is not None:
            await self._limits.aclose()
        await self._control.aclose()
        if self._redis is not None:
            await self._redis.aclose()


def _stat_key(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def _with_revision(active: ActivePolicy, revision: int) -> ActivePolicy:
    return ActivePolicy(active.version, active.digest, active.source, active.applied_at, active.text, revision)
