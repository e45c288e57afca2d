"""Open-world decoding and encoding: what the gateway does not model survives the trip.

The wire structs of ``backends.types`` declare only the fields the gateway reads or changes.
Decoding an upstream answer (or a client's request) through ``decode``/``adopt`` keeps every
other field on the instance that holds it, at any depth (a choice's ``matched_stop``, a
message's ``audio`` or ``annotations``, ``usage.completion_tokens_details``, fields no spec
has yet); ``encode`` writes them back next to the declared ones. The gateway can still change a
declared field in place (the public model name, moderated text, usage) and that change wins.

A struct whose subtree holds nothing undeclared has an empty ``__dict__`` and is encoded by
msgspec natively, so the common case costs one dictionary check per object. Decoding has a
common case too: a text whose every key is declared (most stream chunks) is decoded straight
into its struct, after a check of its keys alone (``_Direct``); anything else takes the walk.
"""

from __future__ import annotations

import functools
import operator
import types
import typing
from typing import Any, TypeVar

import msgspec
from msgspec import UnsetType

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
_DIRECT: dict[type[Any], _Direct | None] = {}


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
    decoded = decode_declared(data, cls)
    if decoded is not None:
        return decoded
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


def decode_declared(data: bytes | str, cls: type[T]) -> T | None:
    """``data`` as ``cls`` when every key in it is declared (nothing for ``adopt`` to keep)
    and the declared part fits, decoded in C; None otherwise: decode it the other way, which
    keeps what is undeclared and raises what does not fit."""
    direct = _DIRECT[cls] if cls in _DIRECT else _direct(cls)
    decoded: T | None = direct.decode(data) if direct is not None else None
    return decoded


class _Direct:
    """Decodes a text with no undeclared key straight into its struct: both steps in C.

    ``adopt`` walks decoded dictionaries in Python, about 3 µs a stream chunk in a loop and
    several times that between a paced stream's chunks, when caches are cold. Here a decoder
    of ``keys`` (a twin of the struct tree that declares the same names, forbids any other and
    validates no value) first proves that ``adopt`` would find nothing; only then is the text
    decoded as ``cls``. Any failure returns None and the caller takes the walk, so what is
    returned, and every error raised, stays exactly the walk's.
    """

    def __init__(self, cls: type[T], keys: type[Any]) -> None:
        self._keys = msgspec.json.Decoder(keys)
        self._typed = msgspec.json.Decoder(cls)

    def decode(self, data: bytes | str) -> Any:
        try:
            self._keys.decode(data)
            return self._typed.decode(data)
        except (msgspec.DecodeError, ValueError, RecursionError):  # bad UTF-8 is a ValueError
            return None


def _direct(cls: type[Any]) -> _Direct | None:
    keys = _keys_twin(cls, {})
    direct = _DIRECT[cls] = _Direct(cls, keys) if keys is not None else None
    return direct


def _keys_twin(cls: type[Any], made: dict[type[Any], type[Any] | None]) -> type[Any] | None:
    """A struct type with ``cls``'s field names, every other key forbidden, nested structs
    twinned the same way and every other value left unparsed (``msgspec.Raw``); None when
    ``cls`` is read differently by ``adopt`` (a tagged struct, renamed fields)."""
    if cls in made:
        return made[cls]
    made[cls] = None  # a recursive tree is not twinned
    if cls.__struct_config__.tag is not None:
        return None  # adopt sees a tag as undeclared: keep its view
    nested = set(_shape(cls)[1])
    fields: list[tuple[str, Any, Any]] = []
    for field in msgspec.structs.fields(cls):
        if field.encode_name != field.name:
            return None  # adopt compares declared names, not encoded ones
        kind = _keys_type(field.type, made) if field.name in nested else msgspec.Raw
        if kind is None:
            return None
        fields.append((field.name, kind, None))
    twin = made[cls] = msgspec.defstruct(f"{cls.__name__}Keys", fields, forbid_unknown_fields=True)
    return twin


def _keys_type(kind: Any, made: dict[type[Any], type[Any] | None]) -> Any:
    """The twin of a field type that can hold structs, None when nothing of it can be twinned.

    A struct's twin, a list of them; in a union each struct-holding member's twin, the other
    members as they are, and a member with no twin (a list of tagged content parts) left
    out, so a value of that kind fails the twin and takes the walk. Constraints
    (``Annotated``) are the typed decoder's to check.
    """
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    if isinstance(kind, type) and issubclass(kind, Wire):
        return _keys_twin(kind, made)
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        twin = _keys_type(item, made)
        return list[twin] if twin is not None else None  # type: ignore[valid-type]
    if origin is typing.Union or origin is types.UnionType:
        members = []
        for member in typing.get_args(kind):
            if member is UnsetType:
                continue
            twin = _keys_type(member, made) if _holds_struct(msgspec.inspect.type_info(member)) else member
            if twin is not None:
                members.append(twin)
        return functools.reduce(operator.or_, members) if members else None
    return None
