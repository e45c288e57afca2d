"""The strict pydantic base every policy and config model derives from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown fields are errors and values are frozen.

    Field docstrings are the docs, read from the source (tests check every moderation field
    has one); pydantic is not asked to copy them into the fields (``use_attribute_docstrings``
    parsed every model's source at import: ~0.15 s of every start, and their text in memory).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
