"""Process settings: what is fixed for the life of one gateway process.

Routing and limits live in the policy document (they change live); these do not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    """Settings of one gateway process; each can come from a ``SWITCHYARD_*`` variable."""

    policy_path: Path
    """The policy YAML file."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Larger request bodies get 413 before they are read in full."""
    max_connections_per_backend: int = 0
    """Cap on pooled upstream connections per policy backend; 0 = no cap."""
    classifier_path: Path | None = None
    """The difficulty model for ``routes``; the shipped ``router/models/difficulty.onnx`` if unset."""
    moderation_model_path: Path | None = None
    """The moderation classifier; the shipped ``policies/moderation/models/moderation.onnx`` if unset."""
    redis_url: str | None = None
    """Shared state for several replicas (response cache, ...); in memory when unset."""
    cluster: str = "default"
    """Replicas with the same cluster name and Redis share policy changes."""
    access_log: str = "stdout"
    """Where the JSON access lines go: ``stdout``, ``stderr``, ``off`` or a file path."""
    policy_poll_s: float = 1.0
    """How often the policy file is checked for changes (0: never, reload only by API)."""
    drain_timeout_s: float = 600.0
    """How long a replaced policy's runtime waits for its requests before closing anyway."""

    @classmethod
    def from_env(cls, policy_path: str | Path | None = None) -> Settings:
        """Read ``SWITCHYARD_POLICY``, ``SWITCHYARD_MAX_BODY_BYTES``, ``SWITCHYARD_CLASSIFIER``,
        ``SWITCHYARD_CLUSTER``, ``SWITCHYARD_ACCESS_LOG``, ``SWITCHYARD_POLICY_POLL_S``, ``SWITCHYARD_DRAIN_TIMEOUT_S``
        and ``REDIS_URL``."""
        path = policy_path or os.environ.get("SWITCHYARD_POLICY")
        if not path:
            raise ValueError("no policy file: pass --policy or set SWITCHYARD_POLICY")
        max_body = int(os.environ.get("SWITCHYARD_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))
        classifier = os.environ.get("SWITCHYARD_CLASSIFIER")
        return cls(policy_path=Path(path), max_body_bytes=max_body,
                   classifier_path=Path(classifier) if classifier else None,
                   moderation_model_path=Path(moderation) if (moderation := os.environ.get(
                       "SWITCHYARD_MODERATION_MODEL")) else None,
                   redis_url=os.environ.get("REDIS_URL") or None,
                   cluster=os.environ.get("SWITCHYARD_CLUSTER", "default"),
                   access_log=os.environ.get("SWITCHYARD_ACCESS_LOG", "stdout"),
                   policy_poll_s=float(os.environ.get("SWITCHYARD_POLICY_POLL_S", "1.0")),
                   drain_timeout_s=float(os.environ.get("SWITCHYARD_DRAIN_TIMEOUT_S", "600")))
