"""At `pulumi preview` the CrossGuard pack sees every number as a float (protobuf Struct: 6379 -> 6379.0). Every rule
must judge such inputs as it judges the program's own ints: the local stack, floated, passes exactly as it does
offline. (Found by the real-engine e2e: data-path-tls read "port 6379.0" and blocked the shipped stack.)"""
from __future__ import annotations

from typing import Any

from hybridml.ops.check import program_views
from policies.rules import ALL_RULES, ResourceView, evaluate


def _floated(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: _floated(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floated(v) for v in value]
    return value


def test_every_rule_judges_floated_numbers_like_ints():
    views, ctx = program_views("local", mode="local")
    floated = [ResourceView(v.type, v.name, _floated(v.props), cluster=v.cluster, urn=v.urn) for v in views]
    assert any(isinstance(p.get("containerPort"), float) for v in floated if v.kind == "StatefulSet"
               for c in v.props["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or [])
    as_ints = sorted((f.rule, f.resource, f.message) for f in evaluate(ALL_RULES, views, ctx) if f.mandatory)
    as_floats = sorted((f.rule, f.resource, f.message) for f in evaluate(ALL_RULES, floated, ctx) if f.mandatory)
    assert as_ints == [] and as_floats == []
