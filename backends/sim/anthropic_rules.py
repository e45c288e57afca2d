"""What the real Messages API checks before it generates, for the Anthropic simulator.

Written from the ``anthropic`` SDK's request types (``anthropic.types.message_create_params``,
SDK 2.17) and the API's documented rules, not from the gateway's types: a misunderstanding the
gateway and this simulator shared would otherwise pass every test. Every failure is a
``SimFailure(400, ...)`` whose message names the field, as the API's ``invalid_request_error``
does.

Thinking signatures: the simulator signs each ``thinking`` block it emits with an HMAC of its
text under a key derived from the served model, so every simulated worker of that model accepts
the others' blocks (as the real API does across an organisation) and any edit is caught.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from backends.sim.engine import SimFailure

BODY_FIELDS = frozenset({
    # MessageCreateParams of the anthropic SDK 2.17 (user_profile_id and workspace_id are
    # headers on the wire, so they are not body fields)
    "model", "messages", "max_tokens", "cache_control", "container", "diagnostics",
    "inference_geo", "metadata", "output_config", "service_tier", "speed", "stop_sequences",
    "stream", "system", "thinking", "tool_choice", "tools",
    # sampling fields the SDK's signatures dropped in 1.0 but the API still accepts (clients
    # send them with extra_body)
    "temperature", "top_p", "top_k",
})
THINKING_TYPES = ("thinking", "redacted_thinking")
MIN_THINKING_BUDGET = 1024
_EFFORTS = ("low", "medium", "high", "xhigh", "max")
_THINKING_CONFIGS = ("enabled", "disabled", "adaptive", "between_tools")


def fail(message: str) -> SimFailure:
    """A 400 ``invalid_request_error`` with ``message``."""
    return SimFailure(400, message)


def check_fields(body: dict[str, Any]) -> None:
    """Unknown top-level fields are refused (``sim_*`` test hooks aside)."""
    unknown = sorted(k for k in body if k not in BODY_FIELDS and not k.startswith("sim_"))
    if unknown:
        raise fail(f"{unknown[0]}: Extra inputs are not permitted")


def check_sampling(body: dict[str, Any]) -> None:
    """``temperature`` and ``top_p`` in [0, 1], and never both (current Claude models)."""
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise fail(f"{name}: Input should be a valid number")
        if not 0 <= value <= 1:
            raise fail(f"{name}: Input should be greater than or equal to 0 and less than or equal to 1")
    if body.get("temperature") is not None and body.get("top_p") is not None:
        raise fail("`temperature` and `top_p` cannot both be specified for this model. "
                   "Please use only one.")


def output_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of ``output_config.format``, or None; checks the whole object."""
    config = body.get("output_config")
    if config is None:
        return None
    if not isinstance(config, dict):
        raise fail("output_config: Input should be an object")
    extra = set(config) - {"effort", "format"}
    if extra:
        raise fail(f"output_config.{min(extra)}: Extra inputs are not permitted")
    effort = config.get("effort")
    if effort is not None and effort not in _EFFORTS:
        raise fail(f"output_config.effort: Input should be one of {', '.join(_EFFORTS)}")
    fmt = config.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise fail("output_config.format.type: Input should be 'json_schema'")
    if set(fmt) - {"type", "schema"}:
        raise fail(f"output_config.format.{min(set(fmt) - {'type', 'schema'})}: "
                   "Extra inputs are not permitted")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise fail("output_config.format.schema: Field required (a JSON schema object)")
    return schema


def thinking_enabled(body: dict[str, Any]) -> bool:
    """Whether the answer opens with a thinking block; checks ``thinking`` on the way."""
    config = body.get("thinking")
    if config is None:
        return False
    if not isinstance(config, dict) or config.get("type") not in _THINKING_CONFIGS:
        raise fail(f"thinking.type: Input should be one of {', '.join(_THINKING_CONFIGS)}")
    if config["type"] == "enabled":
        budget = config.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool):
            raise fail("thinking.enabled.budget_tokens: Field required")
        if budget < MIN_THINKING_BUDGET:
            raise fail(f"thinking.enabled.budget_tokens: Input should be greater than or equal to "
                       f"{MIN_THINKING_BUDGET}")
        if budget >= body["max_tokens"]:
            raise fail("`max_tokens` must be greater than `thinking.budget_tokens`")
    return config["type"] in ("enabled", "adaptive")


def sign(model: str, thinking: str) -> str:
    """The signature of a thinking block this simulator emits for ``model``."""
    key = hashlib.sha256(f"switchyard-sim-thinking:{model}".encode()).digest()
    return base64.b64encode(hmac.new(key, thinking.encode(), hashlib.sha256).digest()).decode()


def check_thinking_history(body: dict[str, Any], thinking: bool) -> None:
    """Signed blocks must be intact, and with thinking on, the assistant turn whose tool calls
    the request answers must open with its thinking block, as the real API requires."""
    messages: list[dict[str, Any]] = body["messages"]
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or not isinstance(message["content"], list):
            continue
        for j, block in enumerate(message["content"]):
            if isinstance(block, dict) and block.get("type") == "thinking":
                signature = block.get("signature")
                if not isinstance(signature, str) or not hmac.compare_digest(
                        signature, sign(body["model"], str(block.get("thinking", "")))):
                    raise fail(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")
    if not thinking:
        return
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None or not isinstance(messages[last]["content"], list):
        return
    blocks = [b for b in messages[last]["content"] if isinstance(b, dict)]
    if any(b.get("type") == "tool_use" for b in blocks) and blocks[0].get("type") not in THINKING_TYPES:
        raise fail(
            f"messages.{last}.content.0.type: Expected `thinking` or `redacted_thinking`, but "
            f"found `{blocks[0].get('type')}`. With `thinking` enabled, the assistant turn whose "
            "tool calls are being answered must open with its thinking block: send the earlier "
            "turn's thinking blocks back unchanged, or disable `thinking`.")


def minimal_instance(schema: dict[str, Any], root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """The smallest value matching ``schema``: required properties only, minimal lengths,
    the first enum value or alternative. Enough for structured-output round trips."""
    root = schema if root is None else root
    if depth > 32:
        raise fail("output_config.format.schema: schema nests too deeply")
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return minimal_instance(_resolve(ref, root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options and isinstance(options[0], dict):
            return minimal_instance(options[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return _minimal_of_type(kind, schema, root, depth)


def _minimal_of_type(kind: Any, schema: dict[str, Any], root: dict[str, Any], depth: int) -> Any:
    if kind == "object" or (kind is None and "properties" in schema):
        properties: dict[str, Any] = schema.get("properties") or {}
        required = schema.get("required") or []
        return {name: minimal_instance(properties.get(name) or {}, root, depth + 1)
                for name in required}
    if kind == "array":
        items = schema.get("items")
        items = items if isinstance(items, dict) else {}
        return [minimal_instance(items, root, depth + 1) for _ in range(int(schema.get("minItems", 0)))]
    if kind == "string":
        return "s" * int(schema.get("minLength", 0))
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = low + 1 if "exclusiveMinimum" in schema else low
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    return None


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/") if ref.startswith("#/") else ():
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        raise fail(f"output_config.format.schema: cannot resolve $ref {ref!r}")
    return node
