"""referents-exist: every object a rendered object names is created on its cluster or is a named prerequisite."""
from __future__ import annotations

import re

import pytest

from policies.rules import RULES_BY_NAME, Context, ResourceView, SiteFacts
from policies.rules.referents import PREREQUISITES, missing_referents, references
from tests.conftest import REPO


def _view(kind: str, api: str, name: str, ns: str | None, cluster: str = "dc", **fields) -> ResourceView:
    meta = {"name": name} | ({"namespace": ns} if ns else {})
    return ResourceView(f"kubernetes:{api}:{kind}", name, {"metadata": meta, **fields}, cluster=cluster)


def _deployment(secret: str, sa: str = "default", cluster: str = "dc") -> ResourceView:
    pod = {"serviceAccountName": sa, "containers": [{"name": "c", "env": [
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": secret, "key": "pw"}}}]}],
        "volumes": [{"name": "cache", "ephemeral": {"volumeClaimTemplate": {"spec": {"storageClassName": "local-path"}}}}]}
    return _view("Deployment", "apps/v1", "app", "ml", cluster, spec={"template": {"spec": pod}})


CTX = Context(sites={"dc": SiteFacts("dc", "datacenter", ("pii",), ()), "aws": SiteFacts("aws", "cloud", ("internal",), ())})
NS = _view("Namespace", "core/v1", "ml", None)
STORAGE = _view("StorageClass", "storage.k8s.io/v1", "local-path", None)


def _findings(resources):
    return [found[1] for found in missing_referents(resources, CTX)]


def test_a_secret_nobody_creates_is_named_with_the_field_that_names_it():
    storage = _view("StorageClass", "storage.k8s.io/v1", "local-path", None)
    out = _findings([NS, storage, _deployment("redis-auth")])
    assert len(out) == 1
    assert "Secret ml/redis-auth" in out[0] and "env[PW]" in out[0]


def test_created_builtin_and_prerequisite_referents_pass():
    secret = _view("Secret", "core/v1", "redis-auth", "ml")
    storage = _view("StorageClass", "storage.k8s.io/v1", "local-path", None)
    public = _view("Certificate", "cert-manager.io/v1", "public-tls", "ml", spec={
        "secretName": "public-tls", "issuerRef": {"name": "hybridml-public", "kind": "ClusterIssuer"}})
    # default ServiceAccount: built in; hybridml-public: a named prerequisite.
    assert _findings([NS, secret, storage, public, _deployment("redis-auth")]) == []


def test_referents_are_per_cluster():
    # The same Secret and StorageClass on another cluster do not count.
    ns_aws = _view("Namespace", "core/v1", "ml", None, "aws")
    secret_dc = _view("Secret", "core/v1", "redis-auth", "ml", "dc")
    storage_dc = _view("StorageClass", "storage.k8s.io/v1", "local-path", None, "dc")
    out = _findings([ns_aws, secret_dc, storage_dc, _deployment("redis-auth", cluster="aws")])
    assert any("Secret ml/redis-auth" in m and "on aws" in m for m in out)
    assert any("StorageClass local-path" in m for m in out)


def test_missing_namespace_service_account_and_gateway_referents():
    gw = _view("Gateway", "gateway.networking.k8s.io/v1", "public", "edge", spec={
        "gatewayClassName": "hybridml", "listeners": [{"name": "l", "tls": {"certificateRefs": [{"name": "public-tls"}]}}]})
    route = _view("HTTPRoute", "gateway.networking.k8s.io/v1", "r", "edge", spec={
        "parentRefs": [{"name": "public"}], "rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]})
    out = "\n".join(_findings([gw, route, _deployment("s", sa="runner")]))
    for expected in ("Namespace edge", "GatewayClass hybridml", "Secret edge/public-tls", "Service edge/svc",
                     "ServiceAccount ml/runner", "Namespace ml"):
        assert expected in out
    assert "Gateway edge/public" not in out          # the route's parent exists


def test_a_certificate_stands_for_the_secret_cert_manager_issues_from_it():
    cert = _view("Certificate", "cert-manager.io/v1", "redis-tls", "ml", spec={
        "secretName": "redis-auth", "issuerRef": {"name": "hybridml-fleet-ca", "kind": "ClusterIssuer"}})
    issuer = _view("ClusterIssuer", "cert-manager.io/v1", "hybridml-fleet-ca", None)
    assert _findings([NS, STORAGE, cert, issuer, _deployment("redis-auth")]) == []
    out = _findings([NS, STORAGE, cert, _deployment("redis-auth")])
    assert out and "ClusterIssuer hybridml-fleet-ca" in out[0]


def test_every_prerequisite_is_listed_in_the_readme():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Prerequisites", 1)
    assert len(section) == 2, "README has no '## Prerequisites' section"
    body = re.split(r"\n## ", section[1], maxsplit=1)[0]
    for p in PREREQUISITES:
        assert f"{p.kind} `{p.name}`" in body, f"README Prerequisites does not list {p.kind} {p.name}"


def test_references_cover_pod_templates_of_custom_resources():
    flink = _view("FlinkDeployment", "flink.apache.org/v1beta1", "job", "ml", spec={
        "podTemplate": {"spec": {"containers": [{"name": "flink-main-container",
                                                 "envFrom": [{"secretRef": {"name": "feast-store"}}]}]}}})
    assert {(r.kind, r.name) for r in references(flink)} >= {("Secret", "feast-store"), ("Namespace", "ml")}


@pytest.mark.parametrize("env", ["dev", "prod", "local"])
def test_the_shipped_environments_name_only_objects_that_exist(env, tmp_path):
    """Through the real program under mocks (as `hybridml check` runs it), then a broken variant: drop the
    fleet certificate and the rule names the Secret the gateway's listener would miss."""
    from hybridml.ops.check import program_views

    views, ctx = program_views(env)
    refs = sum(1 for v in views for _ in references(v))
    assert refs > 100
    rule = RULES_BY_NAME["referents-exist"]
    assert [f"{f.resource}: {f.message}" for f in rule.stack_findings(views, ctx)] == []
    broken = [v for v in views if not (v.kind == "Certificate" and v.metadata.get("name") == "fleet-tls")]
    assert len(broken) < len(views)
    found = rule.stack_findings(broken, ctx)
    assert found and all("fleet-tls" in f.message for f in found)
    assert all(f.mandatory for f in found)


def test_a_datacenter_object_store_secret_is_a_prerequisite_the_spec_names():
    from types import SimpleNamespace

    flink = _view("FlinkDeployment", "flink.apache.org/v1beta1", "job", "ml", spec={
        "podTemplate": {"spec": {"containers": [{"name": "flink-main-container",
                                                 "envFrom": [{"secretRef": {"name": "dc-store-keys"}}]}]}}})
    store = SimpleNamespace(credentials_secret="dc-store-keys")
    with_store = Context(sites=CTX.sites, env=SimpleNamespace(datacenters=[SimpleNamespace(name="dc", object_store=store)]))
    assert [m for _, m, _ in missing_referents([NS, flink], with_store)] == []
    assert any("Secret ml/dc-store-keys" in m for _, m, _ in missing_referents([NS, flink], CTX))
