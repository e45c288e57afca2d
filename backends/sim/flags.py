"""``switchyard sim`` flags: one per ``SimConfig`` field, read from its annotations and docstrings.

Kept apart from ``server`` (aiohttp, the engine) so ``switchyard --help`` builds its parser
without importing either.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import typing
from collections.abc import Callable
from typing import Any

from backends.sim.config import SimConfig


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per ``SimConfig`` field, with its default and its docstring as help."""
    hints = typing.get_type_hints(SimConfig)
    docs = _field_docs()
    for field in dataclasses.fields(SimConfig):
        hint = hints[field.name]
        flag = "--" + field.name.replace("_", "-")
        help_text = docs.get(field.name, "") + " (default: %(default)s)"
        options: dict[str, Any] = {"dest": field.name, "default": field.default, "help": help_text}
        if hint is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is typing.Literal:
            options["choices"] = typing.get_args(hint)
        else:
            options["type"] = _scalar(hint)
        parser.add_argument(flag, **options)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The ``SimConfig`` described by flags that ``add_sim_arguments`` added."""
    return SimConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SimConfig)})


def _scalar(hint: Any) -> Callable[[str], Any]:
    """``int`` for ``int``, ``str`` for ``str | None``: the type argparse converts with."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint  # type: ignore[no-any-return]


def _field_docs() -> dict[str, str]:
    """Attribute docstrings of ``SimConfig`` fields, read from its source (empty if unavailable)."""
    try:
        tree = ast.parse(inspect.getsource(SimConfig))
    except (OSError, TypeError, SyntaxError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs

