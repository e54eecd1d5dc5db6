"""privacy-home-zone-pinning: at a datacenter each tiered pod is pinned to its home zone, as placement counted it."""
from __future__ import annotations

import pytest

from infra import labels as L
from infra.loader import load_environment
from policies.facts import context_for
from policies.rules import RULES_BY_NAME, evaluate
from tests.policies.fixtures import deployment, edit, pod

RULE = RULES_BY_NAME["privacy-home-zone-pinning"]


@pytest.fixture(scope="module")
def local_ctx():
    return context_for(load_environment("local"))   # dc-local: an internal rack and a pii rack


def _pinned(tier: str, zones: list[str], tolerate: str | None):
    def fn(props):
        for labels in (props["metadata"]["labels"], props["spec"]["template"]["metadata"]["labels"]):
            labels[L.PRIVACY_TIER] = tier
        spec = pod(props)
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": L.PRIVACY_ZONE, "operator": "In", "values": zones}]}]}}}
        if tolerate:
            spec["tolerations"] = [{"key": L.PRIVACY_TAINT_KEY, "operator": "Equal", "value": tolerate, "effect": "NoSchedule"}]
    return fn


def _messages(r, ctx):
    return [f.message for f in evaluate([RULE], [r], ctx)]


def test_a_pod_pinned_to_its_home_zone_passes(local_ctx):
    assert _messages(edit(deployment("dc-local"), _pinned("pii", ["pii"], "pii")), local_ctx) == []
    assert _messages(edit(deployment("dc-local"), _pinned("internal", ["internal"], None)), local_ctx) == []


def test_unpinned_or_loosely_pinned_pods_are_violations(local_ctx):
    unpinned = deployment("dc-local")      # internal, no privacy-zone affinity at all
    assert any("In [internal]" in m and "has none" in m for m in _messages(unpinned, local_ctx))
    # "any zone that may hold internal" is the looser rule placement does not count capacity by
    loose = edit(deployment("dc-local"), _pinned("internal", ["internal", "pii", "restricted"], "pii"))
    assert any("In [internal]" in m for m in _messages(loose, local_ctx))
    untolerated = edit(deployment("dc-local"), _pinned("pii", ["pii"], None))
    assert any("does not tolerate" in m and "=pii" in m for m in _messages(untolerated, local_ctx))


def test_cloud_clusters_and_runtime_templates_are_not_this_rule(local_ctx):
    assert _messages(deployment("aws-use1"), local_ctx) == []
    runtime = deployment("dc-local")
    runtime = type(runtime)("kubernetes:serving.kserve.io/v1alpha1:ServingRuntime", "triton",
                            {"metadata": runtime.props["metadata"], "spec": {"containers": [{"name": "c", "image": "x:1"}]}},
                            cluster="dc-local")
    assert _messages(runtime, local_ctx) == []
