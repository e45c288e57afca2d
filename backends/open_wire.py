"""Open-world decoding and encoding: what the gateway does not model survives the trip.

The wire structs of ``backends.types`` declare only the fields the gateway reads or changes.
Decoding an upstream answer (or a client's request) through ``decode``/``adopt`` keeps every
other field on the instance that holds it, at any depth (a choice's ``matched_stop``, a
message's ``audio`` or ``annotations``, ``usage.completion_tokens_details``, fields no spec
has yet); ``encode`` writes them back next to the declared ones. The gateway can still change a
declared field in place (the public model name, moderated text, usage) and that change wins.

A struct whose subtree holds nothing undeclared has an empty ``__dict__`` and is encoded by
msgspec natively, so the common case costs one dictionary check per object.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from backends.types import Wire

T = TypeVar("T", bound=Wire)

UNKNOWN = "_unknown"
"""Instance attribute holding the undeclared fields of one object (possibly empty when only a
descendant has some)."""

_GENERIC = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()
_FIELDS: dict[type[Any], frozenset[str]] = {}


def _fields(cls: type[Any]) -> frozenset[str]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = frozenset(cls.__struct_fields__)
    return names


def adopt(obj: Wire, raw: dict[str, Any]) -> bool:
    """Keep on ``obj`` (and its nested structs) the fields of ``raw`` they do not declare.

    ``obj`` must be ``raw`` converted to its struct type. Returns whether anything undeclared
    was found anywhere below, which is also what the ancestors record.
    """
    fields = _fields(type(obj))
    own = {k: v for k, v in raw.items() if k not in fields} if raw.keys() - fields else None
    deep = own is not None
    for name, value in raw.items():
        if isinstance(value, dict):
            child = getattr(obj, name, None)
            if isinstance(child, Wire) and adopt(child, value):
                deep = True
        elif isinstance(value, list) and value:
            children = getattr(obj, name, None)
            if isinstance(children, list) and children and isinstance(children[0], Wire):
                for child, item in zip(children, value, strict=False):
                    if isinstance(item, dict) and adopt(child, item):
                        deep = True
    if deep:
        obj.__dict__[UNKNOWN] = own or {}
    return deep


def convert(raw: dict[str, Any], cls: type[T]) -> T:
    """``raw`` (decoded JSON) as ``cls``, keeping what ``cls`` does not declare."""
    obj = msgspec.convert(raw, cls)
    adopt(obj, raw)
    return obj


def decode(data: bytes | str, cls: type[T]) -> T:
    """Decode JSON into ``cls`` keeping undeclared fields; raises ``msgspec.DecodeError``
    (``ValidationError`` is one) when the declared part does not fit."""
    raw = _GENERIC.decode(data)
    if not isinstance(raw, dict):
        raise msgspec.ValidationError(f"Expected `object`, got `{type(raw).__name__}`")
    return convert(raw, cls)


def unknown(obj: Wire) -> dict[str, Any]:
    """The fields ``obj`` itself holds without declaring them (empty if none)."""
    found: dict[str, Any] = obj.__dict__.get(UNKNOWN) or {}
    return found


def to_builtins(obj: Any) -> Any:
    """``obj`` ready for a JSON encoder: structs with undeclared fields become dicts holding
    both; everything else is returned as is (msgspec encodes structs natively)."""
    if not isinstance(obj, Wire) or not obj.__dict__:
        if isinstance(obj, list) and obj and isinstance(obj[0], Wire):
            return [to_builtins(item) for item in obj]
        return obj
    out: dict[str, Any] = {}
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        if value is not msgspec.UNSET:
            out[name] = to_builtins(value) if isinstance(value, (Wire, list)) else value
    for name, value in unknown(obj).items():
        out.setdefault(name, value)
    return out


def encode(obj: Any) -> bytes:
    """JSON bytes of a wire value, undeclared fields included."""
    return _ENCODER.encode(to_builtins(obj))


def replace(obj: T, **changes: Any) -> T:
    """``msgspec.structs.replace`` that keeps the undeclared fields of ``obj``."""
    new = msgspec.structs.replace(obj, **changes)
    if obj.__dict__:
        new.__dict__.update(obj.__dict__)
    return new
