"""Typed options of the worker-selection policies, as they appear in the policy document."""

from __future__ import annotations

from typing import Literal


from backends.config import StrictModel


class RoundRobinConfig(StrictModel):
    """Send each request to the next healthy worker in turn."""

    type: Literal["round_robin"] = "round_robin"


# issue 4 adds the other policies; the union then takes Field(discriminator="type")
SelectionConfig = RoundRobinConfig
