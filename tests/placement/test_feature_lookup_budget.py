"""A feature-view dependency's budget covers the RTT to the data site plus the view's measured lookup p99
(`feature_lookup_p99_ms`): placement rejects a site the RTT alone would allow, and `--explain` shows the split."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hybridml.cli import app
from infra.errors import PlacementInfeasible
from infra.features import FEATURE_LOOKUP_P99_MS
from infra.loader import parse_environment
from infra.spec import Dependency
from policies.placement import solve
from policies.placement.eligibility import eligibility, lookup_p99_ms
from tests.conftest import dump


def _spec(small_spec: dict, lookup_ms: float | None, budget: float) -> dict:
    if lookup_ms is not None:
        small_spec["feature_views"][0]["feature_lookup_p99_ms"] = lookup_ms
    small_spec["pipelines"][1]["dependencies"] = [{"feature_view": "user-profile", "latency_budget_ms": budget}]
    return small_spec


def test_the_lookup_p99_is_spent_beside_the_rtt(small_spec):
    # recs (pii) and the pii view share a datacenter: RTT 0.5 ms. 0.5 + 16.4 fits 17; 0.5 + 16.6 does not.
    env = parse_environment(dump(_spec(small_spec, 16.4, 17)))
    assert lookup_p99_ms(env, env.pipeline("recs").dependencies[0]) == 16.4
    el = eligibility(env)
    assert el.sites["recs"] and all(el.near[("recs", k, s)] for (p, k, s) in el.near if p == "recs")
    solve(env)

    env = parse_environment(dump(_spec(small_spec, 16.6, 17)))
    with pytest.raises(PlacementInfeasible) as info:
        solve(env)
    detail = " ".join(r.detail for r in info.value.reasons)
    assert "within 17 ms (16.6 ms lookup p99 + RTT)" in detail


def test_collections_and_the_defaults(small_spec):
    assert Dependency(collection="docs").latency_budget_ms == 5
    assert Dependency(feature_view="v").latency_budget_ms == 5 + FEATURE_LOOKUP_P99_MS   # RTT allowance + default p99
    env = parse_environment(dump(small_spec))
    assert env.feature_views[0].feature_lookup_p99_ms == FEATURE_LOOKUP_P99_MS
    assert lookup_p99_ms(env, Dependency(collection="docs")) == 0.0


def test_explain_shows_the_lookup_share_of_the_budget(tmp_path, small_spec):
    path = tmp_path / "spec.yaml"
    path.write_text(dump(_spec(small_spec, 3.5, 6)))
    result = CliRunner().invoke(app, ["plan", str(path), "--explain", "recs"])
    assert result.exit_code == 0, result.output
    assert "dependency feature_view 'user-profile' within 6 ms = RTT + 3.5 ms feature lookup p99" in result.output
