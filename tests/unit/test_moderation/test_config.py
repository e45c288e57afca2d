"""The moderation section: documented defaults, strict validation, YAML-shaped input."""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from policies.moderation import CATEGORIES, PII_TYPES, ModerationConfig


def test_defaults() -> None:
    config = ModerationConfig()
    assert config.input is not None and config.output is not None
    assert config.input.roles == ("user",)
    assert {c: r.action for c, r in config.input.categories.items()} == {
        c: "block" if c == "sexual/minors" else "flag" for c in CATEGORIES}
    assert {t: r.action for t, r in config.input.pii.items()} == dict.fromkeys(PII_TYPES, "flag")
    assert {c: r.action for c, r in config.output.categories.items()} == dict.fromkeys(CATEGORIES, "block")
    assert {t: r.action for t, r in config.output.pii.items()} == {
        t: "flag" if t in ("email", "ip_address") else "redact" for t in PII_TYPES}
    assert all(r.threshold is None for r in config.output.categories.values())
    assert config.output.window_chars == 160 and config.output.tool_arguments
    assert config.capture_content is False


def test_yaml_policy_section() -> None:
    raw = yaml.safe_load("""
input:
  roles: [user, tool]
  categories:
    hate: {action: block, threshold: 0.8}
  pii: {}
output:
  window_chars: 240
  categories:
    violence: {action: flag}
  pii:
    email: {action: redact}
    secret: {action: block}
  blocked_terms: ["project nightingale"]
capture_content: true
""")
    config = ModerationConfig.model_validate(raw)
    assert config.input is not None and config.output is not None
    assert config.input.roles == ("user", "tool")
    assert list(config.input.categories) == ["hate"] and config.input.categories["hate"].threshold == 0.8
    assert config.input.pii == {}
    assert config.output.pii["secret"].action == "block" and list(config.output.categories) == ["violence"]
    assert config.output.blocked_terms == ("project nightingale",)
    assert ModerationConfig.model_validate({"input": None}).input is None


@pytest.mark.parametrize(("raw", "message"), [
    ({"output": {"categories": {"spam": {}}}}, "spam"),
    ({"output": {"categories": {"hate": {"action": "redact"}}}}, "action"),
    ({"output": {"categories": {"hate": {"threshold": 1.5}}}}, "threshold"),
    ({"output": {"categories": {"hate": {"threshold": 0}}}}, "threshold"),
    ({"output": {"pii": {"passport": {}}}}, "passport"),
    ({"output": {"pii": {"email": {"action": "delete"}}}}, "action"),
    ({"output": {"window_chars": 50}}, "window_chars"),
    ({"output": {"blocked_terms": ["x" * 49]}}, "at most 48"),
    ({"output": {"blocked_terms": ["  "]}}, "empty"),
    ({"input": {"roles": []}}, "roles is empty"),
    ({"input": {"roles": ["robot"]}}, "roles"),
    ({"output": {"window": 100}}, "window"),
    ({"outputs": {}}, "outputs"),
])
def test_invalid_sections_are_clear_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModerationConfig.model_validate(raw)


def test_config_is_frozen() -> None:
    config = ModerationConfig()
    with pytest.raises(ValidationError):
        config.capture_content = True


def test_every_field_is_documented() -> None:
    from policies.moderation.config import (
        CategoryRule,
        InputChecks,
        OutputChecks,
        PiiRule,
    )

    for model in (ModerationConfig, InputChecks, OutputChecks, CategoryRule, PiiRule):
        documented = set().union(*(_documented_fields(c) for c in model.__mro__
                                           if c.__module__.startswith(("policies.", "backends."))))
        for name in model.model_fields:
            assert name in documented, f"{model.__name__}.{name} has no docstring"


def _documented_fields(cls: type) -> set[str]:
    """The fields ``cls`` declares with a docstring right below them (as pydantic would read them)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    assert isinstance(body, ast.ClassDef)
    return {stmt.target.id for stmt, below in zip(body.body, body.body[1:], strict=False)
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            and isinstance(below, ast.Expr) and isinstance(below.value, ast.Constant)
            and isinstance(below.value.value, str)}
