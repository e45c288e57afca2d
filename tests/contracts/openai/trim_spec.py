"""Cut the schemas the gateway serves, and everything they reference, out of OpenAI's spec.

The full OpenAPI document is 3.4 MB; the contract tests need a few hundred of its 1,400
schemas. This keeps those (the roots below and their transitive ``$ref``s), drops the prose
(descriptions, examples, documentation metadata) and writes a small JSON file that the
validator (``spec.py``) loads. The schemas themselves are left exactly as OpenAI wrote them:
the validator, not this script, deals with the spec's conventions and known deviations.

Run from the repository root (the source is openai/openai-openapi at commit f85dbe2, 2.3.0)::

    python tests/contracts/openai/trim_spec.py ../shared/contracts/openai-openapi/openapi.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "Model",
    "ListModelsResponse",
    "ErrorResponse",
    "CreateEmbeddingResponse",
    "Response",
    "ResponseStreamEvent",
    "CreateChatCompletionRequest",
    "CreateCompletionRequest",
)
"""What the gateway answers with (and the two request bodies it forwards)."""

SOURCE_COMMIT = "f85dbe2"
"""openai/openai-openapi commit the vendored subset was cut from."""

TRIMMED = Path(__file__).with_name("openapi.trimmed.json")

# Prose and tooling metadata: validation ignores them and they are most of the bytes.
_DROPPED_KEYS = frozenset({"description", "example", "examples", "x-oaiMeta", "x-oaiTypeLabel",
                           "x-oaiExpandable", "x-stainless-const", "x-stainless-skip",
                           "x-oaiSupportedSDKs"})
_PREFIX = "#/components/schemas/"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _without_prose(node: Any, *, in_properties: bool = False) -> Any:
    if isinstance(node, dict):
        # under "properties" the keys are field names (a field may be called "description")
        return {key: _without_prose(value, in_properties=key == "properties" and not in_properties)
                for key, value in node.items() if in_properties or key not in _DROPPED_KEYS}
    if isinstance(node, list):
        return [_without_prose(item) for item in node]
    return node


def closure(schemas: dict[str, Any], roots: tuple[str, ...]) -> list[str]:
    """Names of ``roots`` and every schema they reach through ``$ref``, in the spec's order."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for ref in _refs(schemas[name]):
            if not ref.startswith(_PREFIX):
                raise ValueError(f"{name} refers outside components/schemas: {ref}")
            todo.append(ref.removeprefix(_PREFIX))
    return [name for name in schemas if name in seen]


def trim(spec: dict[str, Any]) -> dict[str, Any]:
    """The vendored document: OpenAPI header, provenance, and the reachable schemas."""
    schemas = spec["components"]["schemas"]
    return {
        "openapi": spec["openapi"],
        "info": {
            "title": spec["info"]["title"],
            "version": spec["info"]["version"],
            "license": spec["info"]["license"],
            "x-source": f"openai/openai-openapi@{SOURCE_COMMIT} openapi.json, trimmed by "
                        "tests/contracts/openai/trim_spec.py",
            "x-roots": list(ROOTS),
        },
        "components": {"schemas": {name: _without_prose(schemas[name])
                                   for name in closure(schemas, ROOTS)}},
    }


def render(spec: dict[str, Any]) -> str:
    """The trimmed document as committed: one key per line, so a spec update diffs readably."""
    return json.dumps(trim(spec), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="openapi.json of openai/openai-openapi")
    parser.add_argument("--out", type=Path, default=TRIMMED)
    args = parser.parse_args(argv)
    spec = json.loads(args.source.read_text(encoding="utf-8"))
    text = render(spec)
    args.out.write_text(text, encoding="utf-8")
    kept = len(json.loads(text)["components"]["schemas"])
    print(f"{args.out}: {kept} of {len(spec['components']['schemas'])} schemas, {len(text):,} bytes")


if __name__ == "__main__":
    main()
