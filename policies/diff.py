"""What changes between two policy documents, and what each change means for traffic.

``diff_policies`` walks both validated documents as pydantic dumps them (defaults filled
in, so spelling a default out is no change) and reports every value or subtree that was
added, removed or changed. Lists of plain values (workers, a tenant's models) are compared
as sets, lists of named entries (keys) by name, other lists (deployments: their order is
the fallback order) as a whole. The paths operators care about get a one-line meaning:
workers leaving a pool, a new worker selection, route thresholds, tenant models, keys,
rate limits and budgets. Key hashes never appear in full, only their first 8 hex digits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from policies.document import Policy

ChangeKind = Literal["added", "removed", "changed"]
Path = tuple[str, ...]
"""A location as parts: ``("tenants", "demo", "keys", "[demo-key]", "rate_limits")``."""

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MARKS: Mapping[str, str] = {"added": "+", "removed": "-", "changed": "~"}


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between two policies.

    ``old`` and ``new`` are the dumped values (``None`` on the side where the value is
    absent), with key hashes shortened; ``meaning`` says in one line what it does.
    """

    path: str
    """Where, e.g. ``backends.local.workers`` or ``tenants.demo.keys[demo-key]``."""
    kind: ChangeKind
    old: Any
    new: Any
    meaning: str

    @property
    def section(self) -> str:
        """The top-level field the change is under: ``backends``, ``tenants``, ..."""
        return self.path.split(".", 1)[0].split("[", 1)[0]


@dataclass(frozen=True, slots=True)
class _Raw:
    """A change before it is explained, with both whole documents for context."""

    parts: Path
    kind: ChangeKind
    old: Any
    new: Any
    old_doc: Mapping[str, Any]
    new_doc: Mapping[str, Any]

    def part(self, index: int) -> str:
        """A path part, without the brackets of a named list entry."""
        return self.parts[index].strip("[]")


def diff_policies(old: Policy, new: Policy) -> list[Change]:
    """Every difference from ``old`` to ``new``, in document order, each with its meaning."""
    old_doc, new_doc = old.model_dump(mode="json"), new.model_dump(mode="json")
    return [_explain(_Raw(parts, kind, a, b, old_doc, new_doc))
            for parts, kind, a, b in _walk((), old_doc, new_doc)]


def render_changes(changes: list[Change]) -> str:
    """The changes grouped by section, one ``+``/``-``/``~`` line each and its meaning below."""
    if not changes:
        return "no changes"
    sections: dict[str, list[Change]] = {}
    for change in changes:
        sections.setdefault(change.section, []).append(change)
    lines: list[str] = []
    for section, members in sections.items():
        lines.append(section)
        for change in members:
            lines.append(f"  {_MARKS[change.kind]} {change.path}: {_values(change)}")
            lines.append(f"      {change.meaning}")
    noun = "change" if len(changes) == 1 else "changes"
    lines.append(f"{len(changes)} {noun}")
    return "\n".join(lines)


def redact(value: Any) -> Any:
    """``value`` with every SHA-256 hex digest cut to its first 8 digits."""
    if isinstance(value, str) and _HEX64.match(value):
        return value[:8] + "..."
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


# --- the structural walk ------------------------------------------------------------------

_Found = tuple[Path, ChangeKind, Any, Any]


def _walk(parts: Path, old: Any, new: Any) -> Iterator[_Found]:
    if old == new:
        return
    if old is None:
        yield parts, "added", None, new
    elif new is None:
        yield parts, "removed", old, None
    elif isinstance(old, dict) and isinstance(new, dict) and not _retyped(old, new):
        yield from _walk_mapping(parts, old, new, lambda key: key)
    elif isinstance(old, list) and isinstance(new, list):
        yield from _walk_list(parts, old, new)
    else:
        yield parts, "changed", old, new


def _walk_mapping(parts: Path, old: Mapping[str, Any], new: Mapping[str, Any],
                  label: Callable[[str], str]) -> Iterator[_Found]:
    for key in [*old, *(k for k in new if k not in old)]:
        yield from _walk((*parts, label(key)), old.get(key), new.get(key))


def _walk_list(parts: Path, old: list[Any], new: list[Any]) -> Iterator[_Found]:
    if all(_is_scalar(v) for v in (*old, *new)):
        removed = [v for v in old if v not in new]
        added = [v for v in new if v not in old]
        for value in removed:
            yield parts, "removed", value, None
        for value in added:
            yield parts, "added", None, value
        if not removed and not added:  # the same values in another order
            yield parts, "changed", old, new
        return
    old_named, new_named = _by_name(old), _by_name(new)
    if old_named is not None and new_named is not None:
        yield from _walk_mapping(parts, old_named, new_named, lambda name: f"[{name}]")
    else:
        yield parts, "changed", old, new


def _retyped(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """A tagged union switched variants: one change, not the defaults of the new variant."""
    return any(tag in old and tag in new and old[tag] != new[tag] for tag in ("type", "kind"))


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _by_name(items: list[Any]) -> dict[str, Any] | None:
    """The entries by their ``name``, or None when they are not uniquely named mappings."""
    named = {item["name"]: item for item in items
             if isinstance(item, dict) and isinstance(item.get("name"), str)}
    return named if len(named) == len(items) else None


# --- meanings -----------------------------------------------------------------------------


def _explain(raw: _Raw) -> Change:
    meaning = next((rule(raw) for pattern, rule in _RULES if _matches(pattern, raw.parts)), None)
    return Change(_render_path(raw.parts), raw.kind, redact(raw.old), redact(raw.new),
                  meaning or _generic(raw))


def _matches(pattern: Path, parts: Path) -> bool:
    return len(pattern) == len(parts) and all(
        p == part or (p == "*" and not part.startswith("[")) or (p == "[*]" and part.startswith("["))
        for p, part in zip(pattern, parts))


def _render_path(parts: Path) -> str:
    return "".join(part if part.startswith("[") or not index else f".{part}"
                   for index, part in enumerate(parts))


def _values(change: Change) -> str:
    if change.kind == "added":
        return _show(change.new)
    if change.kind == "removed":
        return _show(change.old)
    old, new = change.old, change.new
    if isinstance(old, dict) and isinstance(new, dict):  # a retyped subtree: what differs
        old, new = ({k: v for k, v in side.items() if old.get(k) != new.get(k)} for side in (old, new))
    return f"{_show(old)} -> {_show(new)}"


def _show(value: Any, limit: int = 100) -> str:
    if isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items() if v is not None) + "}"
    elif isinstance(value, list):
        text = "[" + ", ".join(_show(v) for v in value) + "]"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _generic(raw: _Raw) -> str:
    where = _render_path(raw.parts)
    if raw.kind == "added":
        return f"{where} set to {_show(redact(raw.new), 60)}"
    if raw.kind == "removed":
        return f"{where} unset (was {_show(redact(raw.old), 60)}): the default applies"
    return f"{where} {_show(redact(raw.old), 40)} -> {_show(redact(raw.new), 40)}"


def _direction(raw: _Raw, up: str, down: str) -> str:
    """``up`` when the value grew, ``down`` when it shrank (numbers only)."""
    if isinstance(raw.old, int | float) and isinstance(raw.new, int | float):
        return up if raw.new > raw.old else down
    return ""


def _strong_of(raw: _Raw, route: str) -> str:
    target = raw.new_doc.get("routes", {}).get(route) or raw.old_doc.get("routes", {}).get(route) or {}
    return str(target.get("strong", "?"))


def _version(raw: _Raw) -> str:
    return f"version label {raw.old} -> {raw.new}"


def _admin_key(raw: _Raw) -> str:
    if raw.kind == "added":
        return "admin API turned on (/admin/* with the new admin key)"
    if raw.kind == "removed":
        return "admin API turned off: /admin/* answers 404"
    return "admin key rotated: the old admin key stops working"


def _backend(raw: _Raw) -> str:
    name = raw.part(1)
    if raw.kind == "added":
        workers = raw.new.get("workers")
        size = f", {len(workers)} worker(s)" if workers else ""
        return f"backend {name} ({raw.new.get('kind')}{size}) added"
    if raw.kind == "removed":
        return f"backend {name} removed: nothing can be sent to it"
    return f"backend {name} replaced by a backend of kind {raw.new.get('kind')}"


def _worker(raw: _Raw) -> str:
    pool = raw.part(1)
    if raw.kind == "removed":
        return f"worker {_url(raw.old)} leaves pool {pool}: its cached prefixes move to other workers"
    if raw.kind == "added":
        return f"worker {_url(raw.new)} joins pool {pool}: it starts with an empty prefix cache"
    return f"workers of pool {pool} reordered: round robin and ties follow the new order"


def _url(value: Any) -> str:
    return str(value).rstrip("/")


def _base_url(raw: _Raw) -> str:
    return f"backend {raw.part(1)} now calls {_url(raw.new)} (was {_url(raw.old)})"


def _api_key_env(raw: _Raw) -> str:
    if raw.new is None:
        return f"backend {raw.part(1)} is called without a key"
    return f"backend {raw.part(1)} reads its key from ${raw.new}: set it on every gateway first"


_SELECTION_HINTS: Mapping[str, str] = {
    "cache_aware": "requests go where their prefix is cached: more prefix-cache hits",
    "consistent_hash": "each session sticks to one worker: steady cache hits, uneven load",
    "round_robin": "even spread with no prefix affinity: fewer prefix-cache hits",
    "random": "random spread with no prefix affinity: fewer prefix-cache hits",
    "least_load": "least busy worker first, no prefix affinity",
    "power_of_two": "less loaded of two random workers, no prefix affinity",
}


def _selection(raw: _Raw) -> str:
    old, new = (str((side or {}).get("type")) for side in (raw.old, raw.new))
    if old == new:
        return f"pool {raw.part(1)} {new} selection retuned: {_show(raw.new, 60)}"
    hint = _SELECTION_HINTS.get(new, "")
    return f"pool {raw.part(1)} picks workers by {new} instead of {old}" + (f": {hint}" if hint else "")


def _timeout(raw: _Raw) -> str:
    what = raw.part(3).removesuffix("_s").replace("_", "-")
    effect = _direction(raw, "slow upstreams are waited for longer", "slow upstreams fail sooner")
    return f"backend {raw.part(1)} {what} timeout {_show(raw.old)} -> {_show(raw.new)} s: {effect}"


def _model(raw: _Raw) -> str:
    if raw.kind == "added":
        return f"model {raw.part(1)} added: tenants allowed it may call it"
    return f"model {raw.part(1)} removed: requests for it get 404 model_not_found"


def _deployments(raw: _Raw) -> str:
    def chain(items: Any) -> str:
        return " -> ".join(f"{d.get('backend')}:{d.get('model')}" for d in items or [])
    return f"model {raw.part(1)} served by {chain(raw.new)} (was {chain(raw.old)}; first healthy wins)"


def _price(raw: _Raw) -> str:
    kind = raw.part(3).replace("_", " ")
    if raw.kind != "changed":
        return f"{kind} price of model {raw.part(1)} {'set to ' + _show(raw.new) if raw.new is not None else 'unset'}"
    effect = _direction(raw, "dearer", "cheaper")
    return f"{kind} price of model {raw.part(1)} ${_show(raw.old)} -> ${_show(raw.new)} per million tokens: {effect}"


def _prices(raw: _Raw) -> str:
    if raw.kind == "added":
        return f"model {raw.part(1)} now priced: its spend counts against money budgets"
    return f"model {raw.part(1)} no longer priced: it costs nothing in reports and budgets"


def _window(raw: _Raw) -> str:
    effect = _direction(raw, "fewer prompts trimmed or rejected", "more prompts trimmed or rejected")
    return f"context window of model {raw.part(1)} {_show(raw.old)} -> {_show(raw.new)}: {effect}"


def _overflow(raw: _Raw) -> str:
    return f"prompts too long for model {raw.part(1)}: {raw.new} instead of {raw.old}"


def _context(raw: _Raw) -> str:
    if raw.kind == "added":
        return f"model {raw.part(1)} gets a context budget: long prompts are now checked"
    return f"model {raw.part(1)} loses its context budget: long prompts go upstream unchecked"


def _response_cache(raw: _Raw) -> str:
    return f"response cache of model {raw.part(1)} turned {'on' if raw.new else 'off'}"


def _route(raw: _Raw) -> str:
    if raw.kind == "added":
        return f"route {raw.part(1)} added: {raw.new.get('cheap')} or {raw.new.get('strong')} by difficulty"
    return f"route {raw.part(1)} removed: requests for it get 404 model_not_found"


def _threshold(raw: _Raw) -> str:
    route, strong = raw.part(1), _strong_of(raw, raw.part(1))
    if raw.kind == "added":
        return f"route {route} now uses a fixed threshold {_show(raw.new)}"
    if raw.kind == "removed":
        return f"route {route} no longer uses a fixed threshold"
    effect = _direction(raw, "fewer requests to the strong model", "more requests to the strong model")
    return f"route {route} threshold {_show(raw.old)} -> {_show(raw.new)}: {effect} ({strong})"


def _strong_share(raw: _Raw) -> str:
    route = raw.part(1)
    if raw.kind == "added":
        return f"route {route} now sends a share of {_show(raw.new)} to the strong model"
    if raw.kind == "removed":
        return f"route {route} no longer targets a strong-model share"
    effect = _direction(raw, "more requests to the strong model", "fewer requests to the strong model")
    return f"route {route} strong share {_show(raw.old)} -> {_show(raw.new)}: {effect}"


def _tier_model(raw: _Raw) -> str:
    return f"route {raw.part(1)} {raw.part(2)} tier answered by {raw.new} instead of {raw.old}"


def _tenant(raw: _Raw) -> str:
    name = raw.part(1)
    if raw.kind == "added":
        return f"tenant {name} added with {len(raw.new.get('keys') or [])} key(s)"
    return f"tenant {name} removed: its {len(raw.old.get('keys') or [])} key(s) stop working"


def _tenant_models(raw: _Raw) -> str:
    tenant = raw.part(1)
    if raw.kind == "changed":
        return f"tenant {tenant} models reordered (no effect)"
    model = raw.new if raw.kind == "added" else raw.old
    label = "every model ('*')" if model == "*" else f"model {model}"
    return f"tenant {tenant} {'gains' if raw.kind == 'added' else 'loses'} {label}"


def _key(raw: _Raw) -> str:
    tenant, key = raw.part(1), raw.part(3)
    if raw.kind == "added":
        return f"key {key} added to tenant {tenant} (sha256 {redact(raw.new.get('sha256'))})"
    return f"key {key} of tenant {tenant} revoked"


def _key_rotated(raw: _Raw) -> str:
    return (f"key {raw.part(3)} of tenant {raw.part(1)} rotated: {redact(raw.old)} stops working, "
            f"{redact(raw.new)} works")


def _owner(raw: _Raw) -> str:
    """``tenant demo`` or ``key demo/demo-key``: whose limits or thresholds these are."""
    if len(raw.parts) > 3 and raw.parts[2] == "keys":
        return f"key {raw.part(1)}/{raw.part(3)}"
    return f"tenant {raw.part(1)}"


def _route_threshold(raw: _Raw) -> str:
    route = raw.parts[-1]
    if raw.kind == "added":
        return f"{_owner(raw)} gets its own threshold {_show(raw.new)} on route {route}"
    if raw.kind == "removed":
        return f"{_owner(raw)} falls back to route {route}'s threshold"
    effect = _direction(raw, "fewer of its requests", "more of its requests")
    return (f"{_owner(raw)} threshold on route {route} {_show(raw.old)} -> {_show(raw.new)}: "
            f"{effect} to the strong model ({_strong_of(raw, route)})")


def _limits_whole(raw: _Raw) -> str:
    what = "rate limit" if raw.parts[-1] == "rate_limits" else "budget"
    if raw.kind == "added":
        return f"{what} added for {_owner(raw)}: {_show(raw.new, 60)}"
    if raw.kind == "removed":
        return f"{what} removed for {_owner(raw)}: no longer capped"
    return f"{what} of {_owner(raw)} changed"


def _limit(raw: _Raw) -> str:
    what = "rate limit" if raw.parts[-2] == "rate_limits" else "budget"
    field = raw.parts[-1]
    if field == "on_redis_failure":
        return f"{what} of {_owner(raw)} when Redis is down: {raw.new} instead of {raw.old}"
    if raw.kind == "added":
        return f"{what} {field} of {_owner(raw)} set to {_show(raw.new)}: tightened"
    if raw.kind == "removed":
        return f"{what} {field} of {_owner(raw)} unset (was {_show(raw.old)}): loosened"
    effect = _direction(raw, "loosened", "tightened")
    return f"{what} {field} of {_owner(raw)} {_show(raw.old)} -> {_show(raw.new)}: {effect}"


_KEY = ("tenants", "*", "keys", "[*]")
_TENANT = ("tenants", "*")
_RULES: tuple[tuple[Path, Callable[[_Raw], str]], ...] = (
    (("version",), _version),
    (("admin_key_sha256",), _admin_key),
    (("backends", "*"), _backend),
    (("backends", "*", "workers"), _worker),
    (("backends", "*", "base_url"), _base_url),
    (("backends", "*", "api_key_env"), _api_key_env),
    (("backends", "*", "selection"), _selection),
    (("backends", "*", "timeouts", "*"), _timeout),
    (("models", "*"), _model),
    (("models", "*", "deployments"), _deployments),
    (("models", "*", "prices"), _prices),
    (("models", "*", "prices", "*"), _price),
    (("models", "*", "context"), _context),
    (("models", "*", "context", "context_window"), _window),
    (("models", "*", "context", "overflow_action"), _overflow),
    (("models", "*", "response_cache", "enabled"), _response_cache),
    (("routes", "*"), _route),
    (("routes", "*", "threshold"), _threshold),
    (("routes", "*", "strong_share"), _strong_share),
    (("routes", "*", "cheap"), _tier_model),
    (("routes", "*", "strong"), _tier_model),
    (_TENANT, _tenant),
    ((*_TENANT, "models"), _tenant_models),
    (_KEY, _key),
    ((*_KEY, "sha256"), _key_rotated),
    *(((*owner, "route_thresholds", "*"), _route_threshold) for owner in (_TENANT, _KEY)),
    *(((*owner, section), _limits_whole) for owner in (_TENANT, _KEY)
      for section in ("rate_limits", "budgets")),
    *(((*owner, section, "*"), _limit) for owner in (_TENANT, _KEY)
      for section in ("rate_limits", "budgets")),
)
"""Specific meanings by path pattern: ``*`` is any name, ``[*]`` any named list entry."""
