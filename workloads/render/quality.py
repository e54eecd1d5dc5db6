"""Model-quality rules of one pipeline on one site, from the spec's `quality` objectives. Pure.

Every objective records its value as `hybridml:quality_objective:value` and its limit as
`hybridml:quality_objective:threshold` (labels pipeline, site, engine, tier, objective and, for A/B, metric and
variant), so one templated dashboard shows every pipeline's objectives; its alert fires when the value stays
above the limit. Producers (`infra/objectives.py`, README "Quality objectives"):
- ab_metric_delta `success_ratio`: the engine's own request counters per variant (as `slo.py`);
- ab_metric_delta other metrics, prediction_drift, moderator_flag_rate: counters and a histogram the application
  exports (the metric contract); an objective whose series are absent raises `PipelineQualitySignalMissing`;
- shadow_disagreement: none, so validation refuses it and nothing is rendered for it.
"""
from __future__ import annotations

from infra.errors import InvalidValue
from infra.objectives import (
    AB_EVENTS,
    AB_GOOD_EVENTS,
    MODERATION_FLAGS,
    MODERATION_REVIEWED,
    PREDICTION_SCORE,
    SHADOW_DISAGREEMENT_REFUSED,
    SUCCESS_RATIO,
    AbMetricDelta,
    ModeratorFlagRate,
    PredictionDrift,
    QualityObjective,
    ShadowDisagreement,
    ab_baseline,
)
from workloads.render.slo import Target, num, request_sums

VALUE = "hybridml:quality_objective:value"
THRESHOLD = "hybridml:quality_objective:threshold"
AB_RATIO = "hybridml:ab_variant:ratio"
BIN_SHARE = "hybridml:prediction_bin:share"
PSI_EPSILON = 0.0001
"""Smallest share a bin counts with: an empty bin would make the PSI infinite."""
FOR = "15m"
MISSING_FOR = "1h"


def le_regex(bound: float) -> str:
    """Regex of the `le` label of a bucket bound as exporters write it: Go `1`, Python and Prometheus 3 `1.0`."""
    b = float(bound)
    forms = {repr(b), f"{b:g}"} | ({str(int(b))} if b.is_integer() else set())
    return "|".join(sorted(f.replace(".", "[.]").replace("+", "[+]") for f in forms))


def _labels(t: Target, o: QualityObjective, **extra: str) -> dict[str, str]:
    out = {**t.labels, "objective": o.kind}
    if isinstance(o, AbMetricDelta):
        out["metric"] = o.metric
    return {**out, **extra}


def _match(t: Target, o: QualityObjective, **extra: str) -> str:
    parts = [t.match, f'objective="{o.kind}"'] + ([f'metric="{o.metric}"'] if isinstance(o, AbMetricDelta) else [])
    return ",".join(parts + [f'{k}{v}' for k, v in extra.items()])


def _record(name: str, expr: str, labels: dict[str, str]) -> dict:
    return {"record": name, "expr": expr, "labels": labels}


def _alert(name: str, expr: str, for_: str, severity: str, labels: dict[str, str], summary: str, description: str) -> dict:
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity, **labels},
            "annotations": {"summary": summary, "description": description}}


def _missing(t: Target, o: QualityObjective, selector: str, contract: str) -> dict:
    return _alert("PipelineQualitySignalMissing", f"absent({selector})", MISSING_FOR, "ticket", _labels(t, o),
                  f"{t.name} on {t.site}: no {contract} series for its {o.kind} objective",
                  f"The objective is evaluated on {contract}, which the application must export with the label "
                  f'pipeline="{t.name}" (README, Quality objectives); this Prometheus has none, so the objective is '
                  "not being watched here.")


def _ab(t: Target, o: AbMetricDelta) -> list[dict]:
    p, w = t.pipeline, o.window
    base = ab_baseline(p, o)
    out = []
    if o.metric == SUCCESS_RATIO:
        for v in sorted(x.name for x in p.variants):
            if v not in t.workloads:
                continue
            total, errors = request_sums(t, "increase", w, [v])
            expr = f"(1 - ({errors} or vector(0)) / ({total})) and on () (({total}) >= {o.min_events})"
            out.append(_record(AB_RATIO, expr, _labels(t, o, variant=v)))
    else:
        sel = f'pipeline="{p.name}",metric="{o.metric}"'
        events = f"sum by (variant) (increase({AB_EVENTS}{{{sel}}}[{w}]))"
        good = f"(sum by (variant) (increase({AB_GOOD_EVENTS}{{{sel}}}[{w}])) or {events} * 0)"
        out.append(_record(AB_RATIO, f"{good} / {events} and ({events} >= {o.min_events})", _labels(t, o)))
    is_base, not_base = _match(t, o, variant=f'="{base}"'), _match(t, o, variant=f'!="{base}"')
    out.append(_record(VALUE, f"{AB_RATIO}{{{is_base}}} - ignoring (variant) group_right {AB_RATIO}{{{not_base}}}", _labels(t, o)))
    out.append(_record(THRESHOLD, f"vector({num(o.max_drop)})", _labels(t, o)))
    what = "share of requests without a server error" if o.metric == SUCCESS_RATIO else f"{o.metric} ratio"
    out.append(_alert(
        "PipelineAbVariantRegression", f"{VALUE}{{{_match(t, o)}}} > {num(o.max_drop)}", FOR, "ticket", _labels(t, o),
        f"{t.name} on {t.site}: a variant's {what} is more than {o.max_drop:g} below {base}'s",
        f"Over the last {w}, variant {{{{ $labels.variant }}}}'s {what} fell more than {o.max_drop:g} below the "
        f"baseline variant {base}'s. Lower its weight or roll it back."))
    if o.metric != SUCCESS_RATIO:
        out.append(_missing(t, o, f"{AB_EVENTS}{{{sel}}}", AB_EVENTS))
    return out


def _drift(t: Target, o: PredictionDrift) -> list[dict]:
    p = t.pipeline
    bounds = list(o.buckets)
    periods = {"live": f"[{o.window}]", "reference": f"[{o.reference}] offset {o.window}"}
    out = []

    def bucket(le: str, rng: str) -> str:
        return f'sum(increase({PREDICTION_SCORE}_bucket{{pipeline="{p.name}",le{le}}}{rng}))'

    for period, rng in periods.items():
        total = bucket('="+Inf"', rng)
        for i in range(len(bounds) + 1):
            upper = bucket(f'=~"{le_regex(bounds[i])}"', rng) if i < len(bounds) else total
            lower = bucket(f'=~"{le_regex(bounds[i - 1])}"', rng) if i > 0 else None
            count = upper if lower is None else f"({upper} - {lower})"
            out.append(_record(BIN_SHARE, f"clamp_min({count} / {total}, {num(PSI_EPSILON)})",
                               _labels(t, o, bin=str(i), period=period)))
    live_match, ref_match = _match(t, o, period='="live"'), _match(t, o, period='="reference"')
    live, ref = f"{BIN_SHARE}{{{live_match}}}", f"{BIN_SHARE}{{{ref_match}}}"
    psi = f"sum without (bin, period) (({live} - ignoring (period) {ref}) * ln({live} / ignoring (period) {ref}))"
    live_total = bucket('="+Inf"', periods["live"])
    out.append(_record(VALUE, f"{psi} and on () ({live_total} >= {o.min_events})", _labels(t, o)))
    out.append(_record(THRESHOLD, f"vector({num(o.max_psi)})", _labels(t, o)))
    out.append(_alert(
        "PipelinePredictionDrift", f"{VALUE}{{{_match(t, o)}}} > {num(o.max_psi)}", FOR, "ticket", _labels(t, o),
        f"{t.name} on {t.site}: prediction scores drifted (PSI above {o.max_psi:g})",
        f"The population stability index of the scores over the last {o.window} against the {o.reference} before "
        f"is above {o.max_psi:g}. Check the inputs and the model version."))
    out.append(_missing(t, o, f'{PREDICTION_SCORE}_bucket{{pipeline="{p.name}"}}', f"{PREDICTION_SCORE}_bucket"))
    return out


def _flags(t: Target, o: ModeratorFlagRate) -> list[dict]:
    sel, w = f'pipeline="{t.name}"', o.window
    reviewed = f"sum(increase({MODERATION_REVIEWED}{{{sel}}}[{w}]))"
    expr = (f"(sum(increase({MODERATION_FLAGS}{{{sel}}}[{w}])) or vector(0)) / {reviewed} "
            f"and on () ({reviewed} >= {o.min_events})")
    return [
        _record(VALUE, expr, _labels(t, o)),
        _record(THRESHOLD, f"vector({num(o.max)})", _labels(t, o)),
        _alert("PipelineModeratorFlagRateHigh", f"{VALUE}{{{_match(t, o)}}} > {num(o.max)}", FOR, "page", _labels(t, o),
               f"{t.name} on {t.site}: moderators flag more than {o.max:.2%} of reviewed outputs",
               f"Over the last {w}, moderators flagged more than {o.max:.2%} of the outputs they reviewed. Roll "
               "the model back or tighten its safety filter."),
        _missing(t, o, f"{MODERATION_REVIEWED}{{{sel}}}", MODERATION_REVIEWED),
    ]


def rules(t: Target) -> list[dict]:
    """The quality rules of one pipeline on one site (empty without objectives)."""
    out: list[dict] = []
    for o in t.pipeline.quality:
        if isinstance(o, AbMetricDelta):
            out += _ab(t, o)
        elif isinstance(o, PredictionDrift):
            out += _drift(t, o)
        elif isinstance(o, ModeratorFlagRate):
            out += _flags(t, o)
        elif isinstance(o, ShadowDisagreement):
            raise InvalidValue(f"pipeline {t.name}: {SHADOW_DISAGREEMENT_REFUSED}")
    return out
