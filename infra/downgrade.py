"""A dependency's declared downgrade (`dependencies[i].downgrade` of a pipeline; re-exported by `infra.spec`).

What it does is `infra.dataflow`'s: the reads of that dependency count at `to` instead of the data's own tier.
Whether `to` is below the data's tier is checked across the spec (`infra.references`). Imports nothing of ours
but the base model (the tiers are named as strings, so `infra.spec` and this module do not import each other).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from infra.model import StrictModel


class Downgrade(StrictModel):
    """A named, explicit declaration that what a pipeline reads of a data piece is less sensitive than the piece."""

    to: Literal["public", "internal", "pii"] = Field(
        description="Tier the reads count at; below the data's own tier (checked across the spec).")
    reason: str = Field(description="Why the reads carry less, e.g. 'aggregated counts, no per-user values'. Required.")

    @field_validator("reason")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a downgrade needs its reason: why the reads carry less (e.g. 'aggregated counts, no per-user values')")
        return value
