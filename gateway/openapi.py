"""The gateway's OpenAPI document: request bodies from the wire types, errors in OpenAI's shape.

The completion handlers read raw bytes (msgspec decodes them on the hot path), so Litestar
cannot see what they accept, and it documents its own ``{"status_code", "detail"}`` 400 where
the gateway answers ``{"error": {...}}``. ``describe`` completes the document Litestar built,
once, when the app is created: the bodies come from the same types the handlers decode with
(``backends.types``, through msgspec's JSON Schema), so the schema cannot drift from the code.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    Reference,
    RequestBody,
    Schema,
)
from litestar.openapi.spec.enums import OpenAPIType

from backends.types import ChatParams, TextParams

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "additionalProperties": False,
        "properties": {
            "message": {"type": "string", "minLength": 1},
            "type": {"type": "string", "minLength": 1},
            "param": {"type": ["string", "null"]},
            "code": {"type": "string", "minLength": 1},
        },
    }},
}
"""OpenAI's error body: what every door but Anthropic's answers errors with (docs/api.md)."""

ANTHROPIC_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "additionalProperties": False,
            "properties": {"type": {"type": "string", "minLength": 1}, "message": {"type": "string", "minLength": 1}},
        },
    },
}
"""Anthropic's error body, what the Messages door answers errors with."""

ERROR_SHAPES = {"/v1/messages": "AnthropicError", "/v1/messages/count_tokens": "AnthropicError"}
"""Paths whose errors are not in OpenAI's shape, and the schema they use instead."""

JSON_BODIES = {("/v1/chat/completions", "post"): "ChatParams", ("/v1/completions", "post"): "TextParams"}
"""Operations whose body is one of the wire types: answered as JSON, or as SSE when streamed."""
YAML_BODIES = {("/admin/policy", "post")}
"""Operations that take a policy document as YAML text."""

SSE_EVENT: dict[str, Any] = {"type": "object", "required": ["data"],
                             "properties": {"data": {"type": "string"}}}
"""One server-sent event of a streamed answer (``data: {chunk}``, last ``data: [DONE]``)."""


def _schema(value: dict[str, Any]) -> Schema:
    # Litestar renders plain dicts as they are; its Schema dataclass cannot hold every JSON
    # Schema keyword msgspec writes, so the wire types' schemas stay dicts
    return cast(Schema, value)


def describe(openapi: OpenAPI) -> None:
    """Add the request bodies and the OpenAI error responses to the document Litestar built."""
    _, components = msgspec.json.schema_components((ChatParams, TextParams),
                                                   ref_template="#/components/schemas/{name}")
    schemas = openapi.components.schemas = dict(openapi.components.schemas or {})
    for name, value in {**components, "Error": ERROR_SCHEMA, "AnthropicError": ANTHROPIC_ERROR_SCHEMA}.items():
        schemas[name] = _schema(value)
    for path, item in (openapi.paths or {}).items():
        shape = ERROR_SHAPES.get(path, "Error")
        error = OpenAPIResponse(description="An error in the door's shape", content={
            "application/json": OpenAPIMediaType(schema=Reference(ref=f"#/components/schemas/{shape}"))})
        for method in ("get", "post"):
            operation = getattr(item, method, None)
            if operation is None:
                continue
            body = JSON_BODIES.get((path, method))
            if body is not None:
                operation.request_body = RequestBody(required=True, content={"application/json": OpenAPIMediaType(
                    schema=Reference(ref=f"#/components/schemas/{body}"))})
                ok = (operation.responses or {}).get("200")
                if isinstance(ok, OpenAPIResponse) and ok.content is not None:
                    ok.content["text/event-stream"] = OpenAPIMediaType(schema=_schema(SSE_EVENT))
            elif (path, method) in YAML_BODIES:
                operation.request_body = RequestBody(required=True, content={
                    "application/yaml": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))})
            responses = {code: r for code, r in (operation.responses or {}).items() if code.startswith("2")}
            if path == "/readyz":  # a probe: not ready is its own body, not an error
                responses["503"] = OpenAPIResponse(description="Not ready: the same body, ready false",
                                                   content=responses["200"].content)
            operation.responses = {**responses, "default": error}
