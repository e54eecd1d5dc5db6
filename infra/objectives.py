"""Model-quality objectives of a pipeline (`pipelines[].quality`) and their checks across the spec.

Each kind names what it measures and where that number comes from (its *producer*); the serving stack turns
the objectives into Prometheus rules (`workloads/render/quality.py`). A kind whose producer does not exist is
known to the schema but refused by `check_quality`, so no alert ever watches a metric nobody emits.
Imported by `infra.spec` (the models) and `infra.references` (the checks); imports nothing of ours (a pipeline is
seen through the `Pipeline` protocol, so the two modules do not import each other).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, Protocol, Self

from pydantic import AfterValidator, Field, model_validator

from infra.model import StrictModel

WINDOW_UNITS = {"m": 60, "h": 3600, "d": 86400}
SUCCESS_RATIO = "success_ratio"
"""The one A/B metric hybridml measures itself (from the engine's request counters); other names are the application's."""

# The metric contracts of the objectives whose numbers only the application knows (README, Quality objectives).
AB_EVENTS = "hybridml_ab_events_total"
AB_GOOD_EVENTS = "hybridml_ab_good_events_total"
PREDICTION_SCORE = "hybridml_prediction_score"
MODERATION_FLAGS = "hybridml_moderation_flags_total"
MODERATION_REVIEWED = "hybridml_moderation_reviewed_total"

SHADOW_DISAGREEMENT_REFUSED = (
    "shadow_disagreement has no producer: nothing in the serving stack compares a pipeline's answers with its "
    "shadow's (the gateway's request mirror discards the shadow's responses), so its alert would watch a metric "
    "nobody emits. Remove it; to watch the shadow model, give the shadow target a prediction_drift objective")


def window_seconds(window: str) -> int:
    """Seconds of a one-unit Prometheus duration: 5m, 1h, 7d."""
    return int(window[:-1]) * WINDOW_UNITS[window[-1]]


def _window_bounds(value: str) -> str:
    if not 300 <= window_seconds(value) <= 30 * 86400:
        raise ValueError(f"window {value!r} must be between 5m and 30d")
    return value


Window = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,4}[mhd]$"), AfterValidator(_window_bounds)]
Ratio = Annotated[float, Field(gt=0, le=1)]
MinEvents = Annotated[int, Field(ge=1)]
VariantName = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", min_length=1, max_length=40)]


class ShadowDisagreement(StrictModel):
    """Share of mirrored requests whose shadow answer differs from the primary's. The schema knows it; validation
    refuses it (no producer, `SHADOW_DISAGREEMENT_REFUSED`)."""

    kind: Literal["shadow_disagreement"]
    max: Ratio = Field(description="Highest disagreement ratio allowed over the window.")
    window: Window = Field(default="1h", description="Default 1h.")


class AbMetricDelta(StrictModel):
    """A/B: no variant's good-event ratio may fall more than `max_drop` below the baseline variant's."""

    kind: Literal["ab_metric_delta"]
    metric: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description=(
        "'success_ratio': requests answered without a server error, from the engine's own metrics. Any other name "
        "is the application's: it exports hybridml_ab_events_total and hybridml_ab_good_events_total with labels "
        "pipeline, variant and metric (README, Quality objectives)."))
    max_drop: Ratio = Field(description="Largest allowed drop of a variant's ratio below the baseline's (absolute, 0-1).")
    baseline: VariantName | None = Field(default=None, description="The variant the others are compared with. Default: the heaviest.")
    window: Window = Field(default="1h", description="Default 1h.")
    min_events: MinEvents = Field(default=100, description="Events each variant needs in the window to be judged. Default 100.")


def _deciles() -> list[float]:
    return [round(0.1 * i, 1) for i in range(1, 11)]


class PredictionDrift(StrictModel):
    """Population stability index (PSI) of the prediction scores in `window` against the `reference` period just
    before it, from the histogram hybridml_prediction_score the application exports (README, Quality objectives)."""

    kind: Literal["prediction_drift"]
    max_psi: Annotated[float, Field(gt=0)] = Field(
        description="Highest PSI allowed (by convention 0.1 is a small shift, 0.2 a large one).")
    window: Window = Field(default="6h", description="Default 6h.")
    reference: Window = Field(default="7d", description="Length of the reference period just before the window. Default 7d.")
    buckets: list[float] = Field(default_factory=_deciles, min_length=1, max_length=20, description=(
        "Upper bounds (`le`) of the score histogram's buckets, increasing; one more bin holds the scores above the "
        "last bound. Default 0.1, 0.2, ..., 1.0."))
    min_events: MinEvents = Field(default=100, description="Scores needed in the window to be judged. Default 100.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if any(b <= a for a, b in zip(self.buckets, self.buckets[1:], strict=False)):
            raise ValueError(f"buckets must be strictly increasing, got {self.buckets}")
        if window_seconds(self.reference) < window_seconds(self.window):
            raise ValueError(f"reference ({self.reference}) must be at least as long as window ({self.window})")
        return self


class ModeratorFlagRate(StrictModel):
    """Share of reviewed outputs that human moderators flagged, from the counters hybridml_moderation_flags_total
    and hybridml_moderation_reviewed_total the application exports (README, Quality objectives)."""

    kind: Literal["moderator_flag_rate"]
    max: Ratio = Field(description="Highest flagged share of the reviewed outputs over the window.")
    window: Window = Field(default="1d", description="Default 1d.")
    min_events: MinEvents = Field(default=100, description="Reviews needed in the window to be judged. Default 100.")


QualityObjective = Annotated[ShadowDisagreement | AbMetricDelta | PredictionDrift | ModeratorFlagRate,
                             Field(discriminator="kind")]


class _Variant(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> int: ...


class Pipeline(Protocol):
    """What the checks read of an `infra.spec.Pipeline`."""

    @property
    def variants(self) -> Sequence[_Variant]: ...

    @property
    def shadow(self) -> object | None: ...

    @property
    def quality(self) -> Sequence[QualityObjective]: ...


def objective_key(o: QualityObjective) -> str:
    """What an objective watches; two objectives of one pipeline may not watch the same thing."""
    return f"{o.kind}:{o.metric}" if isinstance(o, AbMetricDelta) else o.kind


def ab_baseline(p: Pipeline, o: AbMetricDelta) -> str:
    """The variant the others are compared with: the objective's `baseline`, else the heaviest (first on a tie)."""
    if o.baseline is not None:
        return o.baseline
    return max(p.variants, key=lambda v: v.weight).name


def check_quality(p: Pipeline) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems of one pipeline's quality objectives: (path under the pipeline, message)."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    seen: dict[str, int] = {}
    variants = [v.name for v in p.variants]
    for qi, o in enumerate(p.quality):
        base: tuple[str | int, ...] = ("quality", qi)
        key = objective_key(o)
        if key in seen:
            out.append((base + ("kind",), f"duplicate objective {key!r} (first at quality[{seen[key]}])"))
        seen.setdefault(key, qi)
        if isinstance(o, ShadowDisagreement):
            extra = "" if p.shadow else " (and this pipeline has no shadow target to compare with)"
            out.append((base + ("kind",), SHADOW_DISAGREEMENT_REFUSED + extra))
        elif isinstance(o, AbMetricDelta):
            if len(p.variants) < 2:
                out.append((base + ("kind",), "ab_metric_delta compares A/B variants: the pipeline needs at least two "
                                              f"`variants` (it has {len(p.variants)})"))
            elif o.baseline is not None and o.baseline not in variants:
                out.append((base + ("baseline",), f"unknown variant {o.baseline!r} (variants: {', '.join(variants)})"))
    return out
