"""Read a policy document from YAML and validate it; errors name the path and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from backends.errors import InvalidRequestError
from policies.document import BACKEND_KINDS, Policy, reference_problems


class PolicyError(InvalidRequestError):
    """A policy document that cannot be used; ``problems`` holds (path, message) pairs."""

    code = "invalid_policy"

    def __init__(self, problems: list[tuple[str, str]], source: str = "policy") -> None:
        self.problems = problems
        lines = "\n".join(f"  {path}: {message}" for path, message in problems)
        super().__init__(f"{source} is not a valid policy:\n{lines}")


def format_location(loc: tuple[int | str, ...]) -> str:
    """``('models', 'fast', 'deployments', 0, 'url')`` -> ``models.fast.deployments[0].url``."""
    parts: list[str] = []
    for index, item in enumerate(loc):
        # pydantic puts the discriminator's value in the path of a tagged union: drop it
        if index == 2 and loc[0] == "backends" and item in BACKEND_KINDS:
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts) or "(document)"


def parse_policy(text: str, source: str = "policy") -> Policy:
    """Parse and validate YAML text; raise ``PolicyError`` listing every problem found."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"
        raise PolicyError([(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")], source) from None
    except RecursionError:  # a document nested thousands deep: refuse it, do not crash on it
        raise PolicyError([("(document)", "nested too deeply")], source) from None
    if not isinstance(data, dict):
        raise PolicyError([("(document)", "must be a mapping with backends and models")], source)
    try:
        problems = reference_problems(data)
        policy = Policy.model_validate(data)
    except RecursionError:
        raise PolicyError([("(document)", "nested too deeply")], source) from None
    except ValidationError as exc:
        schema = [(format_location(e["loc"]), e["msg"]) for e in exc.errors(include_url=False)]
        raise PolicyError(schema + problems, source) from None
    if problems:
        raise PolicyError(problems, source)
    return policy


def load_policy(path: str | Path) -> Policy:
    """Read and validate the policy file at ``path``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([("(file)", f"cannot read {file}: {exc.strerror}")], str(file)) from None
    return parse_policy(text, str(file))
