"""The rendered serving stacks (local, dev; prod marked slow): schemas, Pod Security, privacy, labels,
network policies, and the gateway semantics (reachability, weights, failover, token budgets)."""
from __future__ import annotations

import collections

import pytest

from infra import labels as L
from infra.spec import CloudSite, Datacenter, PrivacyTier
from tests.workloads import schemas
from tests.workloads.conftest import rendered
from tests.workloads.podspecs import pod_templates, restricted_violations
from workloads import planning
from workloads.images import Images, check_pinned
from workloads.render import gateway as gw
from workloads.render.context import fleet_host, region_host

STACKS = ["local", "dev", pytest.param("prod", marks=pytest.mark.slow)]
POD_KINDS = {"Deployment", "StatefulSet", "Job", "CronJob", "LeaderWorkerSet", "InferenceService", "FlinkDeployment",
             "RayJob", "RayCluster"}
DATA_KINDS = {"StatefulSet", "FlinkDeployment", "FeatureStore"}


@pytest.fixture(params=STACKS)
def stack(request):
    return rendered(request.param)


def index(stack):
    return {(o.site, o.kind, o.namespace, o.obj_name): o for o in stack.objects}


# --------------------------------------------------------------------------- schemas


def test_every_object_validates_against_its_schema(stack):
    problems = []
    for o in stack.objects:
        errs = schemas.validate(o.manifest)
        if errs:
            problems.append(f"{o.ref()}: {errs[:3]}")
    assert not problems, f"{len(problems)} invalid objects, e.g.\n" + "\n".join(problems[:20])


def test_custom_resources_are_checked_against_shared_crds(stack):
    kinds = {(o.api_version, o.kind) for o in stack.objects}
    custom = {k for k in kinds if schemas.is_custom(*k)}
    assert ("aigateway.envoyproxy.io/v1beta1", "AIGatewayRoute") in custom
    assert ("serving.kserve.io/v1beta1", "InferenceService") in custom
    assert ("keda.sh/v1alpha1", "ScaledObject") in custom
    assert all(schemas.is_custom(*k) or "/" not in k[0] or k[0].split("/")[0].endswith("k8s.io")
               or k[0].split("/")[0] in ("apps", "batch", "policy", "autoscaling") for k in kinds), kinds


def test_schema_check_catches_a_bad_enum_and_a_missing_required_field():
    bad = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x", "namespace": "ml-internal"},
           "spec": {"triggers": [{"type": "prometheus", "metadata": {}}], "unknownField": 1}}
    errs = schemas.validate(bad)
    assert any("scaleTargetRef" in e for e in errs), errs
    assert any("unknownField" in e for e in errs), errs
    route = {"apiVersion": "aigateway.envoyproxy.io/v1beta1", "kind": "AIGatewayRoute",
             "metadata": {"name": "r", "namespace": "g"},
             "spec": {"rules": [{"matches": [{"headers": [{"name": "x", "value": "y", "type": "Prefix"}]}]}]}}
    assert any("Prefix" in e for e in schemas.validate(route))
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "Bad_Name"},
                  "spec": {"template": {}}}
    errs = schemas.validate(deployment)
    assert any("selector" in e for e in errs) and any("DNS" in e for e in errs), errs


# --------------------------------------------------------------------------- pods


def test_every_pod_is_restricted_with_requests_limits_probes_and_pinned_images(stack):
    problems = []
    for o in stack.objects:
        if o.kind in POD_KINDS or o.kind == "ServingRuntime":
            for t in pod_templates(o.manifest):
                problems += [f"{o.site} {t.where}: {e}" for e in restricted_violations(t)]
    assert not problems, "\n".join(problems[:30])


def test_pod_security_check_catches_violations():
    from tests.workloads.podspecs import PodTemplate

    t = PodTemplate("x", {}, {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}]},
                    [{"name": "c", "image": "nginx", "securityContext": {"privileged": True}}])
    errs = restricted_violations(t)
    for expected in ("hostNetwork", "hostPath", "runAsNonRoot", "privileged", "ALL", "not pinned", "readinessProbe"):
        assert any(expected in e for e in errs), (expected, errs)


def test_default_images_are_pinned():
    assert check_pinned(Images()) == []
    assert check_pinned(Images(vllm="vllm/vllm-openai:latest", redis="redis")) == ["vllm", "redis"]


def test_workloads_carry_recommended_and_placement_labels(stack):
    missing = []
    for o in stack.objects:
        lbls = o.manifest.get("metadata", {}).get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                    "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"):
            if key not in lbls:
                missing.append(f"{o.ref()}: {key}")
        if lbls.get(L.SITE) not in (o.site, None):
            missing.append(f"{o.ref()}: site label {lbls.get(L.SITE)}")
        if o.kind in POD_KINDS:
            for t in pod_templates(o.manifest):
                for key in (L.SITE, L.PRIVACY_TIER):
                    if key not in t.labels and o.kind not in ("Job", "CronJob"):
                        missing.append(f"{o.ref()} {t.where}: pod label {key}")
    assert not missing, "\n".join(missing[:20])


def test_gpu_pods_request_gpus_with_tolerations_and_node_selection(stack):
    env = stack.env
    seen = 0
    for o in stack.objects:
        if o.kind not in ("Deployment", "LeaderWorkerSet", "InferenceService"):
            continue
        pipeline = o.manifest["metadata"]["labels"].get(L.PIPELINE)
        if not pipeline or not env.pipeline(pipeline).gpu:
            continue
        gpu = env.pipeline(pipeline).gpu
        for t in pod_templates(o.manifest):
            seen += 1
            res = t.containers[0]["resources"]
            assert res["limits"][L.GPU_RESOURCE] == res["requests"][L.GPU_RESOURCE], t.where
            assert t.spec["nodeSelector"][L.GPU_PRODUCT] == L.gpu_product(gpu.type), t.where
            assert any(tol["key"] == L.GPU_TAINT_KEY for tol in t.spec["tolerations"]), t.where
    assert seen


# --------------------------------------------------------------------------- privacy


def test_no_pii_or_restricted_piece_on_a_cloud_cluster(stack):
    env = stack.env
    cloud = {s.name for s in env.sites if isinstance(s, CloudSite) and not
             set(s.privacy_tiers) & {PrivacyTier.pii, PrivacyTier.restricted}}
    offenders = []
    for o in stack.objects:
        if o.site not in cloud:
            continue
        tier = o.manifest.get("metadata", {}).get("labels", {}).get(L.PRIVACY_TIER)
        if tier in ("pii", "restricted") or (o.namespace or "") in ("ml-pii", "ml-restricted"):
            offenders.append(o.ref())
    assert not offenders, offenders[:20]
    sensitive_sites = {o.site for o in stack.objects
                       if o.manifest.get("metadata", {}).get("labels", {}).get(L.PRIVACY_TIER) == "pii"}
    if any(p.privacy_tier.is_sensitive for p in env.pipelines):
        assert sensitive_sites and not sensitive_sites & cloud


def test_pods_keep_to_their_tiers_home_zone_in_datacenters(stack):
    """Sensitive pods only on nodes of a zone that may hold them; in a datacenter every tier's pods on
    its home zone only (internal work never takes the room of pii racks, as the placement counted)."""
    seen = set()
    for o in stack.objects:
        if o.kind not in POD_KINDS:
            continue
        for t in pod_templates(o.manifest):
            tier = t.labels.get(L.PRIVACY_TIER) or o.manifest["metadata"]["labels"].get(L.PRIVACY_TIER)
            if tier is None or "affinity" not in t.spec:
                continue
            terms = t.spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            zones = terms[0]["matchExpressions"][0]["values"]
            assert set(zones) <= set(L.zones_allowed_for(PrivacyTier(tier))), o.ref()
            site = stack.env.site(o.site)
            if isinstance(site, Datacenter):
                present = {r.privacy_zone.value for r in site.racks}
                assert zones == [L.home_zone(PrivacyTier(tier), present)], o.ref()
                seen.add((tier, zones[0]))
    assert seen, "no datacenter pod with a privacy tier rendered"


def test_pii_data_is_read_only_from_the_same_jurisdiction(stack):
    env, plan = stack.env, stack.plan
    for d in plan.data:
        if not PrivacyTier(d.privacy_tier).is_sensitive:
            continue
        for by_site in d.serves.values():
            for psite, dsite in by_site.items():
                assert env.site(psite).jurisdiction == env.site(dsite).jurisdiction, (d.name, psite, dsite)


# --------------------------------------------------------------------------- secrets


def test_credentials_only_in_secrets(stack):
    """Derived credentials are Pulumi secrets written only into Secret objects, never into other specs."""
    from tests.workloads.harness import TEST_SEED
    from workloads.secrets import derive

    samples = [derive(TEST_SEED, f"vllm-api-key/{s}") for s in stack.plan.used_sites()]
    for d in stack.plan.data:
        for s in d.sites:
            samples.append(derive(TEST_SEED, f"{'redis' if d.kind == 'feature_view' else 'qdrant'}/{s}/{d.name}"))
    import json
    for o in stack.objects:
        if o.kind == "Secret":
            continue
        text = json.dumps(o.manifest)
        assert not any(s in text for s in samples), o.ref()
    secrets = [o for o in stack.objects if o.kind == "Secret"]
    assert secrets and all("stringData" in o.manifest for o in secrets)
    assert len(stack.secrets_seen) >= len(secrets), "secret values must stay Output secrets"


# --------------------------------------------------------------------------- network policies


def test_every_namespace_with_pods_is_default_deny(stack):
    pod_ns = {(o.site, o.namespace) for o in stack.objects if o.kind in POD_KINDS}
    policies = collections.defaultdict(set)
    for o in stack.k8s("NetworkPolicy"):
        policies[(o.site, o.namespace)].add(o.obj_name)
        spec = o.manifest["spec"]
        if o.obj_name == "default-deny":
            assert spec["podSelector"] == {} and set(spec["policyTypes"]) == {"Ingress", "Egress"}
            assert "ingress" not in spec and "egress" not in spec
    for key in pod_ns:
        assert {"default-deny", "allow-dns"} <= policies[key], key


def test_data_services_reachable_across_sites_only_from_reader_sites(stack):
    env, plan = stack.env, stack.plan
    cidrs = planning.site_cidrs(env)
    for o in stack.k8s("Service"):
        if o.manifest["spec"].get("type") != "LoadBalancer":
            continue
        ann = o.manifest["metadata"].get("annotations", {})
        assert ann.get("service.beta.kubernetes.io/aws-load-balancer-scheme") == "internal" or \
            ann.get("metallb.universe.tf/address-pool") == "fleet", o.ref()
        sources = set(o.manifest["spec"]["loadBalancerSourceRanges"])
        labels = o.manifest["metadata"]["labels"]
        name = labels.get("hybridml.io/feature-view") or labels.get("hybridml.io/collection")
        kind = "feature_view" if "hybridml.io/feature-view" in labels else "collection"
        readers = planning.data_readers(plan, kind, name, o.site)
        assert sources == {c for s in readers if s != o.site for c in cidrs[s]}, o.ref()


# --------------------------------------------------------------------------- gateway


def _routes_at(stack, site):
    return [o for o in stack.objects if o.site == site and o.kind in ("AIGatewayRoute", "HTTPRoute")]


def _resolve_local(stack, idx, site, backend_name):
    """A local Backend resolves to a Service / InferenceService on the same site."""
    b = idx.get((site, "Backend", "hybridml-gateway", backend_name))
    assert b, f"{site}: Backend {backend_name} missing"
    host = b.manifest["spec"]["endpoints"][0]["fqdn"]["hostname"]
    name, ns = host.split(".")[:2]
    # KServe (Standard mode) makes the Service `<isvc>-predictor` of an InferenceService
    target = idx.get((site, "Service", ns, name)) or idx.get((site, "InferenceService", ns, name.removesuffix("-predictor")))
    assert target, f"{site}: {backend_name} -> {host} has no Service/InferenceService"
    return target


def _serve_rule(route):
    return next(r for r in route.manifest["spec"]["rules"] if r.get("name") in ("serve", "mirror"))


def test_every_placed_pipeline_is_reachable_from_every_region_it_serves(stack):
    env, plan, summary = stack.env, stack.plan, stack.summary
    idx = index(stack)
    domain = summary["domain"]
    checked = 0
    for pp in plan.pipelines:
        p = env.pipeline(pp.name)
        for region, shares in pp.routing.items():
            if not shares:
                continue
            cls = planning.entry_class(p.privacy_tier)
            entry = summary["entries"][region][cls]
            if p.privacy_tier.is_sensitive:
                assert env.site_allows(env.site(entry), p.privacy_tier), (p.name, region, entry)
            gateway = idx.get((entry, "Gateway", "hybridml-gateway", "public"))
            assert gateway, f"{region}: no public gateway at {entry}"
            section = planning.listener_name(region, cls)
            listener = next(lst for lst in gateway.manifest["spec"]["listeners"] if lst["name"] == section)
            assert listener["hostname"] == region_host(region, domain, cls)
            kind = "AIGatewayRoute" if p.is_llm else "HTTPRoute"
            route = idx.get((entry, kind, "hybridml-gateway", gw.entry_route_name(p.name, region)))
            assert route, f"{p.name} from {region}: no route at {entry}"
            assert route.manifest["spec"]["parentRefs"][0]["sectionName"] == section
            rule = _serve_rule(route)
            if p.is_llm:
                assert rule["matches"][0]["headers"][0]["value"] == planning.served_model_name(p)
            else:
                assert rule["matches"][0]["path"]["value"] == gw.match_path(p)
            primary_sites = set()
            for ref in rule["backendRefs"]:
                if ref.get("priority", 0) != 0 or ref["name"].endswith("-fallback"):
                    continue
                if ref["name"].startswith("local-"):
                    _resolve_local(stack, idx, entry, ref["name"])
                    primary_sites.add(entry)
                    continue
                site = ref["name"].removeprefix("site-")
                backend = idx[(entry, "Backend", "hybridml-gateway", ref["name"])]
                assert backend.manifest["spec"]["endpoints"][0]["fqdn"]["hostname"] == fleet_host(site, domain)
                assert idx.get((site, "Gateway", "hybridml-gateway", "fleet")), f"{site}: no fleet gateway"
                fleet = idx.get((site, kind, "hybridml-gateway", gw.fleet_route_name(p.name)))
                assert fleet, f"{p.name}: no fleet route at {site}"
                for fref in _serve_rule(fleet)["backendRefs"]:
                    _resolve_local(stack, idx, site, fref["name"])
                primary_sites.add(site)
            assert primary_sites == {s for s, x in shares.items() if x > 0}, (p.name, region)
            checked += 1
    assert checked == sum(1 for pp in plan.pipelines for r, s in pp.routing.items() if s)


def test_weights_sum_right(stack):
    env = stack.env
    for o in stack.objects:
        if o.kind not in ("AIGatewayRoute", "HTTPRoute"):
            continue
        for rule in o.manifest["spec"]["rules"]:
            refs = rule["backendRefs"]
            primary = [r for r in refs if r.get("priority", 0) == 0 and not r["name"].endswith("-fallback")]
            assert sum(r.get("weight", 1) for r in primary) == planning.WEIGHT_TOTAL, o.ref()
    for o in stack.objects:
        pipeline = o.manifest.get("metadata", {}).get("labels", {}).get(L.PIPELINE)
        if o.kind == "AIGatewayRoute" and o.obj_name.endswith("-fleet") and env.pipeline(pipeline).variants:
            p = env.pipeline(pipeline)
            weights = {r["name"]: r["weight"] for r in o.manifest["spec"]["rules"][0]["backendRefs"]}
            expected = planning.split_integer(planning.WEIGHT_TOTAL, {v.name: v.weight for v in p.variants},
                                              at_least_one=True)
            assert weights == {gw.local_backend(p, v): w for v, w in expected.items()}


def test_failover_order_follows_rtt(stack):
    env, summary = stack.env, stack.summary
    for r in summary["routes"]:
        region = r["region"]
        failover = sorted((b for b in r["backends"] if b["priority"] > 0), key=lambda b: b["priority"])
        rtts = [env.user_rtt(region, b["site"]) for b in failover]
        assert rtts == sorted(rtts), r
        p = env.pipeline(r["pipeline"])
        for b in failover:
            assert planning.may_serve(env, p, region, b["site"])   # never to a site privacy forbids
        assert [b["priority"] for b in failover] == list(range(1, len(failover) + 1))
    idx = index(stack)
    for r in summary["routes"]:
        p = env.pipeline(r["pipeline"])
        route = idx[(r["entry"], "AIGatewayRoute" if p.is_llm else "HTTPRoute", "hybridml-gateway",
                     gw.entry_route_name(p.name, r["region"]))]
        refs = _serve_rule(route)["backendRefs"]
        if p.is_llm:
            by_site = {}
            for ref in refs:
                site = r["entry"] if ref["name"].startswith("local-") else ref["name"].removeprefix("site-")
                by_site.setdefault(site, ref["priority"])
            assert by_site == {b["site"]: b["priority"] for b in r["backends"]}
        else:
            fallbacks = [ref["name"] for ref in refs if ref["name"].endswith("-fallback")]
            first = [b["site"] for b in r["backends"] if b["priority"] == 1]
            assert fallbacks == [gw.site_backend(s, fallback=True) for s in first]


def test_token_budgets_match_the_spec(stack):
    env = stack.env
    entered: dict[tuple[str, str], int] = collections.Counter()
    for o in stack.k8s("BackendTrafficPolicy"):
        pipeline = o.manifest["metadata"]["labels"].get(L.PIPELINE)
        for rule in o.manifest["spec"].get("rateLimit", {}).get("global", {}).get("rules", []):
            tenant = rule["clientSelectors"][0]["headers"][0]["value"]
            assert rule["limit"]["unit"] == "Minute" and rule["cost"]["request"]["number"] == 0
            assert rule["cost"]["response"]["metadata"]["key"] == "llm_total_token"
            entered[(tenant, pipeline)] += rule["limit"]["requests"]
    placed = {pp.name for pp in stack.plan.pipelines if pp.routing}
    expected = {(t.name, b.pipeline): b.tokens_per_minute for t in env.tenants for b in t.budgets if b.pipeline in placed}
    assert dict(entered) == expected
    for o in stack.k8s("QuotaPolicy"):
        pipeline = o.manifest["metadata"]["labels"][L.PIPELINE]
        rules = o.manifest["spec"]["perModelQuotas"][0]["quota"]["bucketRules"]
        got = {r["clientSelectors"][0]["headers"][0]["value"]: r["quota"]["limit"] for r in rules}
        assert got == {t.name: b.tokens_per_minute for t in env.tenants for b in t.budgets if b.pipeline == pipeline}
    for o in stack.k8s("AIGatewayRoute"):
        keys = {c["metadataKey"] for c in o.manifest["spec"]["llmRequestCosts"]}
        assert "llm_total_token" in keys


def test_shadow_traffic_is_mirrored_to_the_target(stack):
    env = stack.env
    idx = index(stack)
    shadowed = [p for p in env.pipelines if p.shadow and any(pp.name == p.name for pp in stack.plan.pipelines)]
    for m in stack.summary["shadows"]:
        route = idx[(m["entry"], "HTTPRoute", "hybridml-gateway", gw.entry_route_name(m["source"], m["region"]))]
        mirror = [f for f in _serve_rule(route)["filters"] if f["type"] == "RequestMirror"]
        assert mirror and mirror[0]["requestMirror"]["percent"] == int(round(m["percent"]))
        target_route = [o for o in _routes_at(stack, m["target_site"]) if o.obj_name.startswith("shadow-")
                        and o.manifest["metadata"]["labels"][L.PIPELINE] == m["target"]]
        assert target_route, m
    assert bool(shadowed) == bool(stack.summary["shadows"])


def test_controllers_only_on_real_clusters(stack):
    releases = [name for typ, name, _ in stack.other if typ == "kubernetes:helm.sh/v3:Release"]
    if stack.env.name == "local":
        assert releases == []
    else:
        # per real site: Envoy Gateway, the AI gateway's CRDs and controller, cert-manager (the fleet PKI)
        expected = {f"{site}-{role}" for site in stack.plan.used_sites()
                    for role in ("gateway-envoy-gateway", "gateway-ai-gateway-crds", "gateway-ai-gateway", "pki-cert-manager")}
        assert sorted(releases) == sorted(expected)


def test_vllm_servers_match_the_spec(stack):
    env = stack.env
    for o in stack.k8s("Deployment"):
        if o.manifest["metadata"]["labels"]["app.kubernetes.io/name"] != "vllm":
            continue
        p = env.pipeline(o.manifest["metadata"]["labels"][L.PIPELINE])
        c = o.manifest["spec"]["template"]["spec"]["containers"][0]
        args = c["args"]
        opt = {args[i]: args[i + 1] for i in range(1, len(args) - 1) if args[i].startswith("--")}
        assert opt["--tensor-parallel-size"] == str(p.engine.tensor_parallel)
        assert opt["--max-model-len"] == str(p.engine.max_model_len)
        assert opt["--gpu-memory-utilization"] == str(p.engine.gpu_memory_utilization)
        assert opt["--served-model-name"] == planning.served_model_name(p)
        assert ("--speculative-config" in opt) == (p.engine.speculative is not None)
        vols = {v["name"]: v for v in o.manifest["spec"]["template"]["spec"]["volumes"]}
        assert vols["dshm"]["emptyDir"]["medium"] == "Memory"
        assert c["readinessProbe"]["httpGet"]["path"] == "/health" and c["livenessProbe"]["httpGet"]["path"] == "/health"
    for o in stack.k8s("ScaledObject"):
        trig = o.manifest["spec"]["triggers"][0]
        if o.manifest["metadata"]["labels"]["app.kubernetes.io/name"] == "vllm":
            assert "vllm:num_requests_waiting" in trig["metadata"]["query"]
            p = env.pipeline(o.manifest["metadata"]["labels"][L.PIPELINE])
            assert (o.manifest["spec"]["minReplicaCount"] == 0) == p.autoscaling.scale_to_zero


def test_replicas_match_the_plan(stack):
    env, plan = stack.env, stack.plan
    counted: dict[tuple[str, str], int] = collections.Counter()
    for o in stack.objects:
        lbls = o.manifest.get("metadata", {}).get("labels", {})
        if L.PIPELINE not in lbls or lbls.get("app.kubernetes.io/component") != "model-server":
            continue
        if o.kind in ("Deployment", "LeaderWorkerSet"):
            counted[(lbls[L.PIPELINE], o.site)] += o.manifest["spec"]["replicas"]
        elif o.kind == "InferenceService":
            pred = o.manifest["spec"]["predictor"]
            assert pred["minReplicas"] <= pred["maxReplicas"]
            counted[(lbls[L.PIPELINE], o.site)] += pred["minReplicas"]
    expected = {(pp.name, s): n for pp in plan.pipelines for s, n in pp.replicas.items()}
    zero = {k for k in expected if env.pipeline(k[0]).autoscaling.scale_to_zero and env.pipeline(k[0]).engine.kind == "triton"}
    assert {k: v for k, v in counted.items() if k not in zero} == {k: v for k, v in expected.items() if k not in zero}
