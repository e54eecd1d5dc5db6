"""The base of every spec model: unknown keys are errors, values are frozen, numbers finite, strings bounded."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from infra import limits


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False,
                              str_max_length=limits.MAX_STRING)
