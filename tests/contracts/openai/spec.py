"""Validate JSON against the vendored subset of OpenAI's OpenAPI spec (``openapi.trimmed.json``).

The spec is OpenAPI 3.1 (JSON Schema 2020-12) but mixes in two conventions of older
versions, which the loader rewrites before validating:

- ``nullable: true`` (OpenAPI 3.0) beside ``type``/``enum``/``$ref`` means "or null"; 2020-12
  ignores the keyword, so a stream chunk's ``finish_reason: null`` would fail. Elsewhere the
  spec says "or null" the 3.1 way (``anyOf: [..., {"type": "null"}]``), which needs nothing.
- ``$recursiveRef: "#"`` (2019-09) in ``CompoundFilter`` points at the schema itself.

Where the spec is stricter than what OpenAI or SGLang really send and the ``openai`` SDK
accepts, the difference is listed in ``DEVIATIONS`` (and in the README) rather than loosened
silently; nothing else is relaxed.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SPEC_FILE = Path(__file__).with_name("openapi.trimmed.json")
_BASE = "urn:openai-openapi"
_SCHEMAS = "/components/schemas/"


@dataclass(frozen=True)
class Deviation:
    """One place where real servers send what the spec does not allow (null, mostly).

    Attributes:
        schema: Component schema the change applies to.
        pointer: JSON pointer, inside that schema, to the (sub)schema that may also be null.
        why: Who sends it, for the README and the error a test would otherwise show.
        derived: When set, the change goes into a copy of ``schema`` registered under this
            name, and ``schema`` itself stays as OpenAI wrote it.
        also: The JSON type allowed there besides the spec's own (``null`` unless said).
    """

    schema: str
    pointer: str
    why: str
    derived: str | None = None
    also: str = "null"


COMPLETION_CHUNK = "CreateCompletionResponse.chunk"
"""The spec has no schema for ``/v1/completions`` stream chunks: this derived one is used."""

DEVIATIONS = (
    Deviation("ChatCompletionStreamResponseDelta", "/properties/role",
              "SGLang 0.5.23 dumps every delta with pydantic: role is null after the first chunk"),
    Deviation("ChatCompletionMessageToolCallChunk", "/properties/id",
              "SGLang 0.5.23: argument deltas of a tool call carry id null"),
    Deviation("ChatCompletionMessageToolCallChunk", "/properties/function/properties/name",
              "SGLang 0.5.23: argument deltas of a tool call carry function.name null"),
    Deviation("CompletionUsage", "/properties/prompt_tokens_details",
              "SGLang 0.5.23 (UsageInfo): prompt_tokens_details null without --enable-cache-report"),
    Deviation("CompletionUsage", "/properties/completion_tokens_details",
              "SGLang 0.5.23 (UsageInfo): completion_tokens_details null without reasoning tokens"),
    Deviation("CreateCompletionResponse", "/properties/choices/items/properties/finish_reason",
              "text-completion chunks (OpenAI and SGLang alike) carry finish_reason null until "
              "the last one; the spec has no chunk schema, so chunks are checked against "
              "CreateCompletionResponse with the changes a chat chunk has", derived=COMPLETION_CHUNK),
    Deviation("CreateCompletionResponse", "/properties/usage",
              "text-completion chunks carry usage null like chat chunks (nullable there) when usage "
              "was asked for (OpenAI), and always (SGLang 0.5.23)", derived=COMPLETION_CHUNK),
    Deviation("Embedding", "/properties/embedding",
              "with encoding_format: base64 (what the openai SDK asks for by default) OpenAI and SGLang "
              "0.5.23 send the vector as a base64 string of little-endian float32; the spec knows "
              "only the float array", also="string"),
)
"""Every difference between the spec and the servers the gateway relays: nulls, and base64
embeddings."""


class SpecViolation(AssertionError):
    """A JSON value does not match its OpenAI schema.

    Attributes:
        schema: The schema checked against (a discriminated branch is named after a slash).
        path: Where in the value, as ``$.choices[0].delta.role``.
        reason: What is wrong there.
    """

    def __init__(self, schema: str, path: str, reason: str) -> None:
        super().__init__(f"{schema}: {path}: {reason}")
        self.schema, self.path, self.reason = schema, path, reason


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    composite = any(key in schema for key in ("$ref", "anyOf", "oneOf", "allOf"))
    if isinstance(kind, str) and not composite:
        widened = {**schema, "type": [kind, "null"]}
        if "enum" in schema and None not in schema["enum"]:
            widened["enum"] = [*schema["enum"], None]
        return widened
    return {"anyOf": [schema, {"type": "null"}]}


def _normalize(node: Any, root: str) -> Any:
    """Rewrite the 3.0/2019-09 conventions into 2020-12 (see the module docstring)."""
    if isinstance(node, list):
        return [_normalize(item, root) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _normalize(sub, root) for name, sub in value.items()}
        elif key == "$recursiveRef":
            if value != "#":
                raise ValueError(f"{root}: unsupported $recursiveRef {value!r}")
            out["$ref"] = f"#{_SCHEMAS}{root}"
        elif key not in ("nullable", "$recursiveAnchor"):
            out[key] = _normalize(value, root)
    return _or_null(out) if node.get("nullable") is True else out


def _resolve_pointer(schema: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str]:
    parts = [part.replace("~1", "/").replace("~0", "~") for part in pointer.strip("/").split("/")]
    parent: Any = schema
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    return parent, parts[-1]


def _apply(schemas: dict[str, Any], deviation: Deviation) -> None:
    target = schemas[deviation.schema]
    if deviation.derived is not None:
        if deviation.derived not in schemas:
            schemas[deviation.derived] = copy.deepcopy(target)
        target = schemas[deviation.derived]
    parent, key = _resolve_pointer(target, deviation.pointer)
    if deviation.also == "null":
        parent[key] = _or_null(parent[key])
    else:
        parent[key] = {"anyOf": [parent[key], {"type": deviation.also}]}


def _json_path(error: ValidationError) -> str:
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


class OpenAISpec:
    """The vendored spec, normalized, with a compiled validator per schema name.

    Args:
        document: The trimmed OpenAPI document (``openapi.trimmed.json`` parsed).
    """

    def __init__(self, document: Mapping[str, Any]) -> None:
        raw = document["components"]["schemas"]
        schemas = {name: _normalize(schema, name) for name, schema in raw.items()}
        for deviation in DEVIATIONS:
            _apply(schemas, deviation)
        self.schemas: dict[str, Any] = schemas
        self.version: str = document["info"]["version"]
        resource = DRAFT202012.create_resource({"components": {"schemas": schemas}})
        self._registry: Registry[Any] = Registry().with_resource(_BASE, resource)
        self._validators: dict[str, Draft202012Validator] = {}

    def validator(self, name: str) -> Draft202012Validator:
        """The compiled validator of one component schema (``KeyError`` for an unknown name)."""
        if name not in self.schemas:
            raise KeyError(f"{name} is not in the vendored spec subset")
        if name not in self._validators:
            self._validators[name] = Draft202012Validator(
                {"$ref": f"{_BASE}#{_SCHEMAS}{name}"}, registry=self._registry)
        return self._validators[name]

    def branch(self, name: str, instance: Any) -> str:
        """The union member an instance names by its ``type``, or ``name`` itself.

        ``ResponseStreamEvent`` is a union of ~50 events, each with a one-value ``type``:
        checking the member the event names gives "ResponseCompletedEvent: $.response.status:
        ..." instead of "not valid under any of the given schemas".
        """
        members = self.schemas[name].get("anyOf") or self.schemas[name].get("oneOf") or []
        if not isinstance(instance, dict) or not isinstance(instance.get("type"), str):
            return name
        for member in members:
            ref = member.get("$ref", "") if isinstance(member, dict) else ""
            target = ref.removeprefix(f"#{_SCHEMAS}")
            kind = self.schemas.get(target, {}).get("properties", {}).get("type", {})
            if ref and kind.get("enum") == [instance["type"]]:
                return target
        return name

    def errors(self, name: str, instance: Any) -> Iterator[ValidationError]:
        """Every way ``instance`` fails ``name`` (nothing when it is valid)."""
        found: Iterator[ValidationError] = self.validator(name).iter_errors(instance)
        return found

    def validate(self, name: str, instance: Any) -> str:
        """Check ``instance`` against ``name``; return the schema actually used.

        Raises:
            SpecViolation: with the schema, the JSON path and the reason of the most relevant
                error (``jsonschema``'s best match, which descends into unions).
        """
        used = self.branch(name, instance)
        found = list(self.errors(used, instance))
        error = best_match(found)
        if error is None:
            return used
        label = used if used == name else f"{name}/{used}"
        # the best match first, then (briefly) the others, so one run shows every problem; a
        # union's own "not valid under any" is left out when the best match came from inside it
        others = [f"{_json_path(e)}: {_short(e.message, 120)}" for e in found
                  if e is not error and error not in _within(e)]
        reason = _short(error.message)
        if others:
            reason += f" (also: {'; '.join(others[:4])}{'; ...' if len(others) > 4 else ''})"
        raise SpecViolation(label, _json_path(error), reason)


def _within(error: ValidationError) -> list[ValidationError]:
    inner: list[ValidationError] = []
    for sub in error.context or ():
        inner += [sub, *_within(sub)]
    return inner


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


@functools.cache
def load_spec(path: Path = SPEC_FILE) -> OpenAISpec:
    """The vendored spec, parsed and compiled once per process."""
    return OpenAISpec(json.loads(path.read_text(encoding="utf-8")))


def validate(schema_name: str, instance: Any) -> str:
    """Check ``instance`` against a schema of the vendored spec; return the schema used.

    Raises:
        SpecViolation: naming the schema, the JSON path (``$.choices[0].message``) and why.
    """
    return load_spec().validate(schema_name, instance)
