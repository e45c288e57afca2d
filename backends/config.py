"""The strict pydantic base every policy and config model derives from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown fields are errors, values are frozen, and field docstrings become the docs."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
