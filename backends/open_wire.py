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

NATIVE_EVENTS = "native_events"
"""Instance attribute of a chunk (never encoded) holding the upstream's own events that led to
it, for a door that speaks the upstream's protocol to re-emit as they came. A stage that changes
what the client may see of a chunk drops them, and the door renders the chunk instead."""

_GENERIC = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()
_SHAPES: dict[type[Any], tuple[frozenset[str], tuple[str, ...]]] = {}


def _shape(cls: type[Any]) -> tuple[frozenset[str], tuple[str, ...]]:
    """The fields a struct declares, and those of them that can hold structs (alone or in a
    list): the only ones decoding and encoding need to walk into."""
    shape = _SHAPES.get(cls)
    if shape is None:
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        nested = tuple(f.name for f in info.fields if _holds_struct(f.type))
        shape = _SHAPES[cls] = (frozenset(cls.__struct_fields__), nested)
    return shape


def _holds_struct(kind: msgspec.inspect.Type) -> bool:
    if isinstance(kind, msgspec.inspect.StructType):
        return True
    if isinstance(kind, msgspec.inspect.UnionType):
        return any(_holds_struct(t) for t in kind.types)
    if isinstance(kind, msgspec.inspect.ListType):
        return _holds_struct(kind.item_type)
    return False


def adopt(obj: Wire, raw: dict[str, Any]) -> bool:
    """Keep on ``obj`` (and its nested structs) the fields of ``raw`` they do not declare.

    ``obj`` must be ``raw`` converted to its struct type. Returns whether anything undeclared
    was found anywhere below, which is also what the ancestors record.
    """
    fields, nested = _shape(type(obj))
    extra = raw.keys() - fields
    deep = bool(extra)
    for name in nested:
        value = raw.get(name)
        if type(value) is dict:
            if adopt(getattr(obj, name), value):
                deep = True
        elif type(value) is list and value:
            for child, item in zip(getattr(obj, name), value, strict=False):
                if type(item) is dict and isinstance(child, Wire) and adopt(child, item):
                    deep = True
    if deep:
        obj.__dict__[UNKNOWN] = {k: raw[k] for k in extra}
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
    if not isinstance(obj, Wire):
        if type(obj) is list:
            return [to_builtins(item) for item in obj]
        return obj
    if not obj.__dict__:
        return obj  # nothing undeclared below: msgspec encodes it natively
    cls = type(obj)
    unset = msgspec.UNSET
    out = {name: value for name, value in zip(cls.__struct_fields__, msgspec.structs.astuple(obj), strict=True)
           if value is not unset}
    for name in _shape(cls)[1]:
        value = out.get(name)
        if isinstance(value, Wire):
            out[name] = to_builtins(value)
        elif type(value) is list:
            out[name] = [to_builtins(item) for item in value]
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
