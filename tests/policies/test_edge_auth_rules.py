"""entry-authenticated and limits-keyed-by-identity (policies/rules/edge_auth.py), and referents-exist on the tenants'
key Secret: on small hand-made clusters, then on the shipped environments through the real program under mocks
(as `hybridml check` runs it), each with a broken variant."""
from __future__ import annotations

import copy

import pytest

from policies.rules import RULES_BY_NAME, Context, ResourceView
from policies.rules.edge_auth import limits_on_claimed_headers, unauthenticated_listeners
from workloads.planning import TENANT_HEADER
from workloads.render import edge_auth

GW = "gateway.networking.k8s.io"
EG = "gateway.envoyproxy.io"


def _view(kind: str, api: str, name: str, spec: dict, ns: str = "edge", cluster: str = "dc") -> ResourceView:
    return ResourceView(f"kubernetes:{api}:{kind}", name, {"metadata": {"name": name, "namespace": ns}, "spec": spec},
                        cluster=cluster)


def _gateway(name: str = "public", listeners=("us-east", "us-west")) -> ResourceView:
    return _view("Gateway", f"{GW}/v1", name, {"gatewayClassName": "c", "listeners": [
        {"name": n, "port": 443, "protocol": "HTTPS"} for n in listeners]})


def _route(name: str, listener: str | None = None, gateway: str = "public") -> ResourceView:
    parent = {"name": gateway} | ({"sectionName": listener} if listener else {})
    return _view("HTTPRoute", f"{GW}/v1", name, {"parentRefs": [parent], "rules": [{}]})


def _auth(targets: list[dict], header: str | None = TENANT_HEADER) -> ResourceView:
    auth = {"credentialRefs": [{"name": "keys"}], "extractFrom": [{"headers": ["x-api-key"]}]}
    if header:
        auth["forwardClientIDHeader"] = header
    return _view("SecurityPolicy", f"{EG}/v1alpha1", "auth", {"targetRefs": targets, "apiKeyAuth": auth})


def _limits(targets: list[dict], header: str = TENANT_HEADER) -> ResourceView:
    rule = {"clientSelectors": [{"headers": [{"name": header, "value": "a"}]}], "limit": {"requests": 5, "unit": "Second"}}
    return _view("BackendTrafficPolicy", f"{EG}/v1alpha1", "limits", {"targetRefs": targets,
                                                                      "rateLimit": {"local": {"rules": [rule]}}})


def _msgs(check, resources) -> list[str]:
    return [f"{display}: {msg}" for display, msg, _ in check(resources, Context())]


GATEWAY_REF = {"group": GW, "kind": "Gateway", "name": "public"}


def test_a_listener_with_routes_and_no_authentication_is_named_with_its_routes():
    out = _msgs(unauthenticated_listeners, [_gateway(), _route("a", "us-east"), _route("b")])
    assert len(out) == 2
    assert "Gateway edge/public: listener us-east admits unauthenticated requests to a, b" in out[0]
    assert "listener us-west admits unauthenticated requests to b:" in out[1]


def test_a_gateway_a_listener_or_every_route_may_carry_the_authentication():
    routes = [_gateway(), _route("a", "us-east"), _route("b", "us-west")]
    assert _msgs(unauthenticated_listeners, [*routes, _auth([GATEWAY_REF])]) == []
    only_east = _auth([{**GATEWAY_REF, "sectionName": "us-east"}])
    assert [m.split(":")[1].strip() for m in _msgs(unauthenticated_listeners, [*routes, only_east])] == [
        "listener us-west admits unauthenticated requests to b"]
    per_route = _auth([{"group": GW, "kind": "HTTPRoute", "name": "a"}, {"group": GW, "kind": "HTTPRoute", "name": "b"}])
    assert _msgs(unauthenticated_listeners, [*routes, per_route]) == []
    # a policy that only sets CORS authenticates nobody
    cors = _view("SecurityPolicy", f"{EG}/v1alpha1", "cors", {"targetRefs": [GATEWAY_REF], "cors": {"allowOrigins": ["*"]}})
    assert len(_msgs(unauthenticated_listeners, [*routes, cors])) == 2


def test_a_gateway_that_verifies_client_certificates_needs_no_policy():
    mtls = _view("ClientTrafficPolicy", f"{EG}/v1alpha1", "mtls", {"targetRefs": [{**GATEWAY_REF}], "tls": {
        "clientValidation": {"caCertificateRefs": [{"kind": "ConfigMap", "name": "ca"}]}}})
    assert _msgs(unauthenticated_listeners, [_gateway(), _route("a"), mtls]) == []
    assert _msgs(limits_on_claimed_headers, [_gateway(), _route("a"), mtls, _limits([GATEWAY_REF], "x-claimed")]) == []


def test_limits_must_select_on_the_header_the_identity_is_written_to():
    base = [_gateway(), _route("a", "us-east"), _auth([GATEWAY_REF])]
    assert _msgs(limits_on_claimed_headers, [*base, _limits([GATEWAY_REF])]) == []
    claimed = _msgs(limits_on_claimed_headers, [*base, _limits([GATEWAY_REF], "x-tenant-i-say-i-am")])
    assert len(claimed) == 2 and all("header x-tenant-i-say-i-am on Gateway edge/public listener" in m for m in claimed)
    # on a route: the gateway's policy covers it; without one, the tenant header is the client's word
    on_route = _limits([{"group": GW, "kind": "HTTPRoute", "name": "a"}])
    assert _msgs(limits_on_claimed_headers, [*base, on_route]) == []
    unforwarded = [_gateway(), _route("a", "us-east"), _auth([GATEWAY_REF], header=None), on_route]
    assert ["BackendTrafficPolicy edge/limits" in m and "us-east" in m
            for m in _msgs(limits_on_claimed_headers, unforwarded)] == [True]


# --------------------------------------------------------------------------- the shipped environments


@pytest.fixture(scope="module", params=["local", "dev"])
def shipped(request):
    from hybridml.ops.check import program_views

    return program_views(request.param)


def _findings(rule: str, views, ctx) -> list[str]:
    return [f"{f.cluster}: {f.resource}: {f.message}" for f in RULES_BY_NAME[rule].stack_findings(views, ctx)
            if f.mandatory]


def test_the_shipped_environments_authenticate_every_entry_and_key_limits_by_identity(shipped):
    views, ctx = shipped
    entries = {v.cluster for v in views if v.kind == "Gateway" and v.metadata.get("name") == "public"}
    assert entries and {v.cluster for v in views if v.kind == "SecurityPolicy"} == entries
    for rule in ("entry-authenticated", "limits-keyed-by-identity", "referents-exist"):
        assert _findings(rule, views, ctx) == [], rule


def test_without_the_security_policy_every_entry_gateway_is_named(shipped):
    views, ctx = shipped
    entries = {v.cluster for v in views if v.kind == "Gateway" and v.metadata.get("name") == "public"}
    broken = [v for v in views if v.kind != "SecurityPolicy"]
    found = _findings("entry-authenticated", broken, ctx)
    assert {m.split(":")[0] for m in found} == entries
    assert all("Gateway hybridml-gateway/public: listener" in m for m in found)


def test_limits_on_a_header_the_key_does_not_set_are_named(shipped):
    views, ctx = shipped
    broken = []
    for v in views:
        if v.kind == "SecurityPolicy":
            props = copy.deepcopy(v.props)
            props["spec"]["apiKeyAuth"]["forwardClientIDHeader"] = "x-authenticated-as"
            v = ResourceView(v.type, v.name, props, cluster=v.cluster, urn=v.urn)
        broken.append(v)
    found = _findings("limits-keyed-by-identity", broken, ctx)
    assert found and any("BackendTrafficPolicy hybridml-gateway/public-resilience" in m for m in found)
    assert all(f"header {TENANT_HEADER}" in m for m in found)


def test_the_key_secret_is_a_referent_the_program_creates(shipped):
    views, ctx = shipped
    broken = [v for v in views if not (v.kind == "Secret" and v.metadata.get("name") == edge_auth.API_KEY_SECRET)]
    found = _findings("referents-exist", broken, ctx)
    assert found and all(f"Secret hybridml-gateway/{edge_auth.API_KEY_SECRET}" in m
                         and "spec.apiKeyAuth.credentialRefs" in m for m in found)
