"""Quality objectives in the spec (`pipelines[].quality`): what is accepted, and every refusal named with file, line,
field path and reason, like the rest of the spec."""
from __future__ import annotations

import copy

import pytest

from infra.errors import SpecError
from infra.loader import load_environment, parse_environment
from infra.objectives import SHADOW_DISAGREEMENT_REFUSED, AbMetricDelta, ModeratorFlagRate, PredictionDrift, ab_baseline, window_seconds
from tests.conftest import SMALL_SPEC, dump

AB = {"kind": "ab_metric_delta", "metric": "success_ratio", "max_drop": 0.02}
VARIANTS = [{"name": "a", "model": "m", "weight": 30}, {"name": "b", "model": "m", "weight": 70}]


def spec_with(quality: list[dict], *, pipeline: int = 0, **fields) -> str:
    spec = copy.deepcopy(SMALL_SPEC)
    spec["pipelines"][pipeline]["quality"] = quality
    spec["pipelines"][pipeline].update(fields)
    return dump(spec)


def issues(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_environment(text, "envs/q.yaml")
    return [i.render(info.value.file) for i in info.value.issues]


def test_shipped_local_spec_exercises_every_supported_kind():
    env = load_environment("local")
    kinds = {type(o) for p in env.pipelines for o in p.quality}
    assert kinds == {AbMetricDelta, PredictionDrift, ModeratorFlagRate}
    chat = env.pipeline("chat-small")
    ab = next(o for o in chat.quality if isinstance(o, AbMetricDelta))
    assert ab_baseline(chat, ab) == "base"          # the heaviest variant (90 of 100)
    assert env.pipeline("safety-classifier").availability == 0.999
    assert env.pipeline("embed-text").availability == 0.995 and env.pipeline("embed-text").quality == []


def test_defaults_and_windows():
    env = parse_environment(spec_with([{**AB, "baseline": "a"}, {"kind": "prediction_drift", "max_psi": 0.2},
                                       {"kind": "moderator_flag_rate", "max": 0.01}], variants=VARIANTS), "q.yaml")
    ab, drift, flags = env.pipelines[0].quality
    assert isinstance(ab, AbMetricDelta) and ab.window == "1h" and ab.min_events == 100
    assert ab_baseline(env.pipelines[0], ab) == "a"
    assert isinstance(drift, PredictionDrift) and (drift.window, drift.reference) == ("6h", "7d")
    assert drift.buckets == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert isinstance(flags, ModeratorFlagRate) and flags.window == "1d"
    assert [window_seconds(w) for w in ("5m", "6h", "7d")] == [300, 21600, 604800]


CASES = [
    ("unknown kind", [{"kind": "bleu_score", "min": 0.3}], {}, "pipelines[0].quality[0]", "bleu_score"),
    ("window unit", [{**AB, "window": "90s"}], {"variants": VARIANTS}, "pipelines[0].quality[0].window", "pattern"),
    ("window too long", [{**AB, "window": "45d"}], {"variants": VARIANTS}, "pipelines[0].quality[0].window", "between 5m and 30d"),
    ("typo", [{**AB, "max_dorp": 0.1}], {"variants": VARIANTS}, "pipelines[0].quality[0].max_dorp", "did you mean 'max_drop'"),
    ("ratio above 1", [{"kind": "moderator_flag_rate", "max": 2}], {}, "pipelines[0].quality[0].max", "less than or equal to 1"),
    ("ab without variants", [AB], {}, "pipelines[0].quality[0].kind", "needs at least two `variants` (it has 0)"),
    ("unknown baseline", [{**AB, "baseline": "c"}], {"variants": VARIANTS}, "pipelines[0].quality[0].baseline",
     "unknown variant 'c' (variants: a, b)"),
    ("duplicate", [{"kind": "moderator_flag_rate", "max": 0.01}, {"kind": "moderator_flag_rate", "max": 0.02, "window": "1h"}], {},
     "pipelines[0].quality[1].kind", "duplicate objective 'moderator_flag_rate' (first at quality[0])"),
    ("buckets out of order", [{"kind": "prediction_drift", "max_psi": 0.2, "buckets": [0.5, 0.2]}], {},
     "pipelines[0].quality[0]", "strictly increasing"),
    ("reference shorter than window", [{"kind": "prediction_drift", "max_psi": 0.2, "window": "1d", "reference": "6h"}], {},
     "pipelines[0].quality[0]", "at least as long as window"),
    ("availability too low", [], {"availability": 0.9}, "pipelines[0].availability", "greater than or equal to 0.95"),
    ("shadow disagreement without shadow", [{"kind": "shadow_disagreement", "max": 0.05}], {},
     "pipelines[0].quality[0].kind", "(and this pipeline has no shadow target to compare with)"),
]


@pytest.mark.parametrize("label,quality,fields,path,message", CASES, ids=[c[0] for c in CASES])
def test_bad_objective_names_field_and_reason(label, quality, fields, path, message):
    rendered = issues(spec_with(quality, **fields))
    assert [r for r in rendered if f": {path}: " in r and message in r], f"expected {path!r} / {message!r} in:\n" + "\n".join(rendered)
    assert all(r.startswith("envs/q.yaml:") for r in rendered)


def test_shadow_disagreement_is_refused_for_want_of_a_producer():
    """Even with a shadow target the kind is refused: nothing compares the two answers, so no rule may watch it."""
    spec = copy.deepcopy(SMALL_SPEC)
    spec["pipelines"].append({**copy.deepcopy(spec["pipelines"][1]), "name": "recs-v2", "demand_rps": {}})
    spec["pipelines"][1]["shadow"] = {"target": "recs-v2", "percent": 10}
    spec["pipelines"][1]["quality"] = [{"kind": "shadow_disagreement", "max": 0.05, "window": "1h"}]
    text = dump(spec)
    rendered = issues(text)
    assert len(rendered) == 1 and SHADOW_DISAGREEMENT_REFUSED in rendered[0] and "no shadow target" not in rendered[0]
    line = int(rendered[0].split(":")[1])
    assert text.splitlines()[line - 1].strip() == "- kind: shadow_disagreement"
