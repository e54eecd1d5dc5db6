"""DNS for every hostname the gateways answer, and the model servers' S3 identity (issue 19, parts 4 and 7).

Pure parts: the IAM policies (clusters/iam.py), the annotations and Helm values (clusters/dns.py), the S3 reads per
namespace (clusters/model_access.py). Over the program under mocks (`hybridml.ops.check.program_views`, as
`hybridml check` runs it) on dev and prod: every hostname a site's Gateways and HTTPRoutes answer is published by an
external-dns annotation of that gateway's Service config (EnvoyProxy `envoyService`), every cloud site runs
external-dns with its Route53 Pod Identity, and every cloud site's model namespaces get a role that reads exactly
their pipelines' S3 models.
"""
from __future__ import annotations

import json

import pytest

from clusters import dns, iam, sizing
from clusters.model_access import MODEL_CACHE_CLASS, MODEL_SERVICE_ACCOUNT, pipeline_models, s3_model_reads
from infra.labels import namespace_for
from infra.loader import load_environment
from infra.spec import CloudSite, Environment
from infra.versions import OPERATORS
from tests.conftest import SMALL_SPEC
from tests.pulumi_mocks import of_type, preview

POD_IDENTITY = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"


# --------------------------------------------------------------------------- pure


def _actions(statement: dict) -> set[str]:
    a = statement["Action"]
    return {a} if isinstance(a, str) else set(a)


def test_external_dns_may_change_only_its_zones_records_under_the_domain():
    policy = iam.external_dns_policy(domain="Dev.Example.COM.", zone_id="Z0ABC", partition="aws-cn")
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    change = next(s for s in policy["Statement"] if "route53:ChangeResourceRecordSets" in _actions(s))
    assert change["Effect"] == "Allow" and change["Resource"] == "arn:aws-cn:route53:::hostedzone/Z0ABC"
    cond = change["Condition"]["ForAllValues:StringLike"]
    assert cond["route53:ChangeResourceRecordSetsNormalizedRecordNames"] == ["dev.example.com", "*.dev.example.com"]
    assert set(cond["route53:ChangeResourceRecordSetsRecordTypes"]) == {"A", "AAAA", "CNAME", "TXT"}
    # only listing is unscoped; nothing else of Route53, and nothing of another service
    unscoped = [s for s in policy["Statement"] if s["Resource"] == "*"]
    assert unscoped == [by_sid["ListZones"]] and _actions(by_sid["ListZones"]) <= {"route53:ListHostedZones",
                                                                                   "route53:ListHostedZonesByName"}
    assert all(a.startswith("route53:") for s in policy["Statement"] for a in _actions(s))
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    # without a zone id: any zone, still only names under the domain
    anyzone = iam.external_dns_policy(domain="dev.example.com", zone_id=None)
    change = next(s for s in anyzone["Statement"] if "route53:ChangeResourceRecordSets" in _actions(s))
    assert change["Resource"] == "arn:aws:route53:::hostedzone/*" and "Condition" in change


def test_a_model_reader_reads_exactly_its_model_prefixes():
    uris = ["s3://models/ranker/v1", "s3://models/safety/v7/", "s3://other/recs/2026-11"]
    policy = iam.model_reader_policy(uris)
    actions = {a for s in policy["Statement"] for a in _actions(s)}
    assert actions == {"s3:GetObject", "s3:ListBucket"}
    gets = sorted(r for s in policy["Statement"] if _actions(s) == {"s3:GetObject"} for r in s["Resource"])
    assert gets == ["arn:aws:s3:::models/ranker/v1", "arn:aws:s3:::models/ranker/v1/*", "arn:aws:s3:::models/safety/v7",
                    "arn:aws:s3:::models/safety/v7/*", "arn:aws:s3:::other/recs/2026-11", "arn:aws:s3:::other/recs/2026-11/*"]
    lists = {s["Resource"]: s["Condition"]["StringLike"]["s3:prefix"] for s in policy["Statement"]
             if _actions(s) == {"s3:ListBucket"}}
    assert lists == {"arn:aws:s3:::models": ["ranker/v1", "ranker/v1/*", "safety/v7", "safety/v7/*"],
                     "arn:aws:s3:::other": ["recs/2026-11", "recs/2026-11/*"]}
    whole = iam.model_reader_policy(["s3://models"])
    assert [s["Resource"] for s in whole["Statement"]] == [["arn:aws:s3:::models/*"], "arn:aws:s3:::models"]
    assert "Condition" not in whole["Statement"][1]
    for bad in ([], ["meta-llama/Llama-3.1-8B"], ["s3:///x"]):
        with pytest.raises(ValueError):
            iam.model_reader_policy(bad)


def test_s3_reads_per_namespace_are_the_model_servers_s3_models():
    spec = json.loads(json.dumps(SMALL_SPEC))
    spec["pipelines"].append({
        "name": "ranker", "engine": {"kind": "triton"}, "model": "s3://m/ranker/v2",
        "variants": [{"name": "a", "model": "s3://m/ranker/v2", "weight": 50}, {"name": "b", "model": "s3://n/ranker/v3",
                                                                               "weight": 50}],
        "resources": {"cpu": 4, "memory_gib": 16, "gpu": {"type": "L4", "count": 1}},
        "capacity_rps": 400, "demand_rps": {"us-east": 100}, "latency": {"p99_ms": 200, "service_ms": 50}})
    env = Environment.model_validate(spec)
    reads = s3_model_reads(env, [p.name for p in env.pipelines])
    ns = namespace_for(env.pipeline("ranker").privacy_tier)
    # the CPU service's s3:// model (its own image loads it) and the vLLM hub ids are not the role's
    assert reads == {ns: ("s3://m/ranker/v2", "s3://n/ranker/v3")}
    assert pipeline_models(env.pipeline("ranker")) == ["s3://m/ranker/v2", "s3://n/ranker/v3"]


def test_service_annotations_publish_sorted_hosts_and_route_by_latency_on_cloud():
    ann = dns.service_annotations(["b.x", "a.x", "b.x"], set_identifier="aws-use1", aws_region="us-east-1")
    assert ann == {dns.HOSTNAME: "a.x,b.x", dns.SET_IDENTIFIER: "aws-use1", dns.AWS_REGION: "us-east-1"}
    assert dns.hostnames_of(ann) == ["a.x", "b.x"]
    assert dns.service_annotations(["a.x"], set_identifier="dc") == {dns.HOSTNAME: "a.x"}
    assert dns.service_annotations([]) == {}
    assert all(k.startswith(dns.ANNOTATION_PREFIX) for k in ann)


def test_external_dns_values_and_version():
    zone = dns.HostedZone("dev.example.com", "Z0ABC")
    values = dns.external_dns_values(owner_id="dev-aws-use1", zone=zone, region="us-east-1")
    assert values["sources"] == ["service"] and values["provider"] == {"name": "aws"} and values["policy"] == "sync"
    assert values["txtOwnerId"] == "dev-aws-use1" and values["domainFilters"] == ["dev.example.com"]
    assert values["annotationPrefix"] == dns.ANNOTATION_PREFIX       # the prefix the program's annotations use
    assert "--zone-id-filter=Z0ABC" in values["extraArgs"]
    assert "--aws-zone-type=public" in dns.external_dns_values(owner_id="o", zone=dns.HostedZone("d"), region="r")["extraArgs"]
    assert values["serviceAccount"]["name"] == dns.SERVICE_ACCOUNT
    # requests = limits, within what clusters/sizing.py counts for the release on the system nodes
    (row,) = sizing.CONTROLLER_PODS["external-dns"]
    assert values["resources"]["requests"] == values["resources"]["limits"] == {"cpu": "50m", "memory": "128Mi"}
    assert row.cpu >= 0.05 and row.memory_gib >= 0.125
    release = OPERATORS["external-dns"]
    assert release.installed_by_program and (dns.CHART, dns.CHART_VERSION, dns.NAMESPACE) == ("external-dns", "1.22.0",
                                                                                               "external-dns")


# --------------------------------------------------------------------------- over the program


@pytest.fixture(scope="module", params=["dev", "prod"])
def program(request):
    from hybridml.ops.check import program_views
    from policies.placement import solve

    env = load_environment(request.param)
    plan = solve(env)
    views, _ = program_views(request.param, plan=plan)
    return env, plan, views


def _k8s(views, kind: str, site: str) -> list:
    return [v for v in views if v.cluster == site and v.is_kubernetes and v.kind == kind]


def test_every_hostname_a_site_answers_is_published_by_its_gateway_service(program):
    env, plan, views = program
    domain = f"{env.name}.hybridml.example"
    checked = 0
    for site in plan.used_sites():
        proxies = {v.metadata["name"]: v.props["spec"]["provider"]["kubernetes"]["envoyService"]["annotations"]
                   for v in _k8s(views, "EnvoyProxy", site)}
        published = {name: set(dns.hostnames_of(ann)) for name, ann in proxies.items()}
        gateways = {v.metadata["name"]: v for v in _k8s(views, "Gateway", site)}
        for name, gw in gateways.items():
            proxy = gw.props["spec"]["infrastructure"]["parametersRef"]["name"]
            for listener in gw.props["spec"]["listeners"]:
                if listener.get("hostname"):
                    assert listener["hostname"] in published[proxy], (site, name, listener["hostname"])
                    checked += 1
        for route in _k8s(views, "HTTPRoute", site):
            for parent in route.props["spec"]["parentRefs"]:
                proxy = gateways[parent["name"]].props["spec"]["infrastructure"]["parametersRef"]["name"]
                assert set(route.props["spec"].get("hostnames") or []) <= published[proxy], (site, route.metadata["name"])
        # the fleet gateway answers `<site>.fleet.<domain>`: what other sites' Backends and the fleet certificate name
        assert published["fleet-proxy"] == {f"{site}.fleet.{domain}"}
        s = env.site(site)
        public = proxies.get("public-proxy")
        if isinstance(s, CloudSite) and public:   # latency-based records: one set per site, in its region
            assert (public[dns.SET_IDENTIFIER], public[dns.AWS_REGION]) == (site, s.region)
        elif public:
            assert dns.SET_IDENTIFIER not in public and dns.AWS_REGION not in public
    assert checked >= len(env.user_regions)


def test_every_cloud_site_runs_external_dns_with_its_route53_identity(program):
    env, plan, views = program
    for site in (s for s in env.cloud_sites if s.name in plan.used_sites()):
        releases = [v for v in views if v.cluster == site.name and v.type == "kubernetes:helm.sh/v3:Release"
                    and v.props.get("name") == "external-dns"]
        assert len(releases) == 1, site.name
        values = releases[0].props["values"]
        assert values["txtOwnerId"] == f"{env.name}-{site.name}" and values["domainFilters"] == [f"{env.name}.hybridml.example"]
        assert releases[0].props["version"] == OPERATORS["external-dns"].version
        (assoc,) = [v for v in views if v.cluster == site.name and v.type == POD_IDENTITY
                    and v.props["namespace"] == dns.NAMESPACE]
        assert assoc.props["serviceAccount"] == dns.SERVICE_ACCOUNT == values["serviceAccount"]["name"]
        policy = _policy_of(views, site.name, assoc)
        assert any("route53:ChangeResourceRecordSets" in _actions(s) for s in policy["Statement"])
        classes = {v.metadata["name"]: v for v in _k8s(views, "StorageClass", site.name)}
        assert classes[MODEL_CACHE_CLASS].props["provisioner"] == "efs.csi.aws.com"


def _policy_of(views, site: str, assoc) -> dict:
    role = assoc.props["roleArn"].rsplit("/", 1)[-1]
    (policy,) = [v for v in views if v.cluster == site and v.type == ROLE_POLICY and v.props["role"] == role]
    return json.loads(policy.props["policy"])


def test_each_model_namespace_reads_exactly_its_pipelines_s3_models(program):
    env, plan, views = program
    roles = 0
    for site in (s for s in env.cloud_sites if s.name in plan.used_sites()):
        placed = plan.site(site.name).pipelines
        assocs = {v.props["namespace"]: v for v in views if v.cluster == site.name and v.type == POD_IDENTITY
                  and v.props["serviceAccount"] == MODEL_SERVICE_ACCOUNT}
        expected = s3_model_reads(env, placed)
        assert set(assocs) == set(expected), site.name
        for ns, assoc in assocs.items():
            policy = _policy_of(views, site.name, assoc)
            buckets = {r.split(":::")[1].split("/")[0] for s in policy["Statement"] for r in
                       ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])}
            wanted = {m for p in placed if env.pipeline(p).engine.kind in ("vllm", "triton")
                      and namespace_for(env.pipeline(p).privacy_tier) == ns
                      for m in pipeline_models(env.pipeline(p)) if m.startswith("s3://")}
            assert buckets == {iam.s3_location(m)[0] for m in wanted}
            assert policy == iam.model_reader_policy(sorted(wanted))
            assert len(json.dumps(policy, separators=(",", ":"))) < 10_240   # IAM's inline policy limit per role
            roles += 1
        # the pods that read S3 run as the ServiceAccount those roles are bound to, which the program creates
        for isvc in _k8s(views, "InferenceService", site.name):
            assert isvc.props["spec"]["predictor"]["serviceAccountName"] == MODEL_SERVICE_ACCOUNT
            assert any(v.metadata.get("namespace") == isvc.metadata["namespace"]
                       for v in _k8s(views, "ServiceAccount", site.name) if v.metadata["name"] == MODEL_SERVICE_ACCOUNT)
    if env.name == "prod":
        print(f"prod: {roles} model roles on {sum(1 for s in env.cloud_sites if s.name in plan.used_sites())} cloud sites")


def test_a_configured_hosted_zone_pins_external_dns_and_its_policy(tiny_spec_file):
    result = preview(tiny_spec_file, sites=("aws-use1",), config=(("hybridml:hostedZoneId", "Z0PINNED"),))
    (release,) = [r for r in of_type(result, "kubernetes:helm.sh/v3:Release", "aws-use1") if r.props["name"] == "external-dns"]
    assert "--zone-id-filter=Z0PINNED" in release.props["values"]["extraArgs"]
    policies = [json.loads(r.props["policy"]) for r in of_type(result, ROLE_POLICY, "aws-use1") if "external-dns" in r.name]
    (policy,) = policies
    change = next(s for s in policy["Statement"] if "route53:ChangeResourceRecordSets" in _actions(s))
    assert change["Resource"] == "arn:aws:route53:::hostedzone/Z0PINNED"
