"""The gateway of one site, on Gateway API + Envoy Gateway + Envoy AI Gateway. Pure: returns manifests.

Topology (every site that runs anything has a gateway):

- `public` Gateway (entry sites only): one HTTPS listener per user region that enters the fleet here,
  hostname `<region>.<domain>`.
  Per (pipeline, region) one route: AIGatewayRoute for LLMs (model from the OpenAI body), HTTPRoute for
  Triton (`/v2/models/<pipeline>`) and CPU services (`/pipelines/<pipeline>/`). Backends are the sites
  the plan routes that region to (priority 0, weights = the plan's split, sum 1000), then every other
  site allowed to serve it in RTT order (priority 1, 2, ...: Envoy fails over when a level is unhealthy).
- `fleet` Gateway (every site, internal load balancer, mTLS): listener `fleet` (8443) with one route per
  locally placed pipeline to its local variants (A/B weights of the spec), listener `shadow` (9443) with
  the routes that receive mirrored traffic. Entry gateways reach other sites through `site-<name>`
  Backends pointing at `<site>.fleet.<domain>`; a local site is reached directly.
- Edge identity (render/edge_auth.py): a SecurityPolicy on the `public` Gateway authenticates every request with
  the tenant's API key (401 without a known one) and sets `x-hybridml-tenant` from the key's owner, replacing any
  copy the client sent; every limit below selects on that header.
- Request-rate limits: each tenant's `requests_per_second` per route, a local rate limit in the `public-resilience`
  policy (every route of the public Gateway) and in each token-budget policy (which replaces it on LLM routes).
- Token budgets: `llmRequestCosts` on every LLM route put token counts into Envoy metadata; a
  BackendTrafficPolicy per (LLM pipeline, entry) rate-limits each tenant (header `x-hybridml-tenant`) to
  its share of the budget; a QuotaPolicy on each serving site caps a tenant at its whole budget.
- DNS (`dns_annotations`): each gateway's LoadBalancer Service carries the external-dns annotations of the names it
  answers (clusters/dns.py): the public one its listeners' hostnames, with Route53 latency-based routing on cloud
  sites (set identifier = site, the site's AWS region: a name several sites answer resolves to the nearest healthy
  one); the fleet one `<site>.fleet.<domain>`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from clusters import dns
from infra.dataflow import effective_tier
from infra.labels import namespace_for
from infra.spec import CloudSite, Environment, Pipeline, Tenant
from workloads import planning
from workloads.planning import MODEL_HEADER, TENANT_HEADER, Mirror, RegionRoute, TenantBudget
from workloads.render import edge_auth, meta, pods, triton, vllm
from workloads.render.context import SiteContext, fleet_host, region_host, service_fqdn
from workloads.render.model_pods import placement_affinity, tolerations

PIPELINE_HEADER = "x-hybridml-pipeline"
GATEWAY_CLASS = "hybridml"
PUBLIC = "public"
FLEET = "fleet"
FLEET_PORT = 8443
SHADOW_PORT = 9443
EG = "gateway.envoyproxy.io"
GW = "gateway.networking.k8s.io"
AIG = "aigateway.envoyproxy.io"
RATELIMIT_REDIS = "ratelimit-redis"
PROXY_POD_LABELS = {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy",
                    "app.kubernetes.io/managed-by": "envoy-gateway"}
"""What Envoy Gateway (v1.9.1) labels every proxy pod with and selects them by (its Deployment's immutable selector):
NetworkPolicies select the proxies by these, and an EnvoyProxy's pod labels must not set these keys, or the
Deployment is invalid (`selector` does not match template `labels`) and no proxy runs (tests/e2e/test_proxy_placement.py)."""
VLLM_API_KEY_SECRET = "vllm-api-key"
LLM_REQUEST_TIMEOUT = "300s"


@dataclass(frozen=True)
class GatewaySecrets:
    public_tls: str = "public-tls"
    fleet_tls: str = "fleet-tls"
    fleet_client_tls: str = "fleet-client-tls"
    fleet_ca: str = "fleet-ca"


@dataclass
class SiteGateway:
    """Everything a site's gateway needs to know, computed by `plan_site_gateway`."""

    site: str
    listeners: list[tuple[str, str, str]]                # (listener name, region, entry class) entering here
    routes: list[RegionRoute]                            # (pipeline, region) routes at this entry
    local: dict[str, int]                                # pipelines placed here -> replicas
    mirrors_out: list[Mirror]                            # shadows mirrored by this entry
    mirrors_in: list[Mirror]                             # shadows received here
    budgets: list[TenantBudget]                          # tenant token budgets enforced at this entry
    full_budgets: dict[str, dict[str, int]] = field(default_factory=dict)   # pipeline -> tenant -> tokens/min


def plan_site_gateway(env: Environment, site: str, routes: list[RegionRoute], entries: dict[str, dict[str, str]],
                      local: dict[str, int], mirrors: list[Mirror], budgets: list[TenantBudget]) -> SiteGateway:
    full: dict[str, dict[str, int]] = {}
    for t in env.tenants:
        for b in t.budgets:
            full.setdefault(b.pipeline, {})[t.name] = b.tokens_per_minute
    # One mirror per (source, entry): the regions entering here share it (first region's target site).
    out: dict[str, Mirror] = {}
    for m in mirrors:
        if m.entry == site and m.source not in out:
            out[m.source] = m
    ins: dict[tuple[str, str], Mirror] = {}
    for m in out_all(mirrors):
        if m.target_site == site:
            ins.setdefault((m.source, m.target), m)
    return SiteGateway(
        site=site,
        listeners=sorted((planning.listener_name(r, c), r, c) for r, by_class in entries.items()
                         for c, e in by_class.items() if e == site),
        routes=[r for r in routes if r.entry == site], local=dict(local),
        mirrors_out=sorted(out.values(), key=lambda m: m.source),
        mirrors_in=sorted(ins.values(), key=lambda m: (m.source, m.target)),
        budgets=[b for b in budgets if b.entry == site], full_budgets=full)


def out_all(mirrors: list[Mirror]) -> list[Mirror]:
    """The mirrors actually configured: per (source, entry) the first region's choice."""
    seen: dict[tuple[str, str], Mirror] = {}
    for m in mirrors:
        seen.setdefault((m.source, m.entry), m)
    return list(seen.values())


# --------------------------------------------------------------------------- names


def local_backend(p: Pipeline, variant: str) -> str:
    return meta.k8s_name("local", p.name, variant)


def site_backend(site: str, *, fallback: bool = False) -> str:
    return meta.k8s_name("site", site, "fallback" if fallback else "")


def shadow_backend(site: str) -> str:
    return meta.k8s_name("shadow", site)


def entry_route_name(p: str, region: str) -> str:
    return meta.k8s_name(p, region)


def fleet_route_name(p: str) -> str:
    return meta.k8s_name(p, "fleet")


def _lbl(ctx: SiteContext, component: str, instance: str, pipeline: str | None = None, tier: str | None = None) -> dict:
    return meta.labels("gateway", component, instance=instance, site=ctx.site, pipeline=pipeline, tier=tier)


def proxy_pod_labels(ctx: SiteContext, gateway: str) -> dict[str, str]:
    """Our labels on a Gateway's proxy pods, less the keys Envoy Gateway sets itself (PROXY_POD_LABELS)."""
    return {k: v for k, v in _lbl(ctx, "proxy", gateway).items() if k not in PROXY_POD_LABELS}


def variant_weights(p: Pipeline, total: int) -> dict[str, int]:
    """A/B split of `total` by the spec's variant weights ("" when the pipeline has no variants)."""
    if not p.variants:
        return {"": total}
    return planning.split_integer(total, {v.name: v.weight for v in p.variants}, at_least_one=True)


def local_target(p: Pipeline, variant: str) -> tuple[str, int]:
    """(in-cluster host, port) of a local variant."""
    ns = namespace_for(p.privacy_tier)
    if p.engine.kind == "vllm":
        return service_fqdn(meta.k8s_name(p.name, variant), ns), vllm.PORT
    if p.engine.kind == "triton":
        return service_fqdn(triton.predictor_name(triton.isvc_name(p, variant)), ns), 80   # Standard mode: no top-level Service
    return service_fqdn(meta.k8s_name(p.name, variant), ns), 80


def match_path(p: Pipeline) -> str:
    return f"/v2/models/{p.name}" if p.engine.kind == "triton" else f"/pipelines/{p.name}"


# --------------------------------------------------------------------------- gateways


def gateways(ctx: SiteContext, sg: SiteGateway, secrets: GatewaySecrets, public_lb: dict, internal_lb: dict,
             tenants: Sequence[Tenant] = ()) -> list[dict]:
    ns = ctx.gateway_namespace
    out = [{
        "apiVersion": f"{GW}/v1", "kind": "GatewayClass",
        "metadata": {"name": GATEWAY_CLASS, "labels": _lbl(ctx, "gateway-class", GATEWAY_CLASS)},
        "spec": {"controllerName": f"{EG}/gatewayclass-controller",
                 "description": "hybridml: Envoy Gateway with the Envoy AI Gateway extension"},
    }]
    kinds = [(FLEET, internal_lb)] + ([(PUBLIC, public_lb)] if sg.listeners else [])
    for name, ann in kinds:
        out.append({
            "apiVersion": f"{EG}/v1alpha1", "kind": "EnvoyProxy",
            "metadata": meta.metadata(f"{name}-proxy", ns, _lbl(ctx, "proxy-config", name)),
            "spec": {"provider": {"type": "Kubernetes", "kubernetes": {
                "envoyDeployment": {
                    "replicas": 2,
                    "pod": {"securityContext": pods.pod_security_context(65532),
                            "labels": proxy_pod_labels(ctx, name)},
                    "container": {"securityContext": pods.container_security_context(65532),
                                  "resources": pods.resources(2, 2)},
                },
                "envoyService": {"type": "LoadBalancer", "annotations": ann, "externalTrafficPolicy": "Local"},
                "envoyPDB": {"minAvailable": 1},
            }}},
        })
    fleet_listeners = [
        {"name": "fleet", "port": FLEET_PORT, "protocol": "HTTPS",
         "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secrets.fleet_tls}]},
         "allowedRoutes": {"namespaces": {"from": "Same"}}},
        {"name": "shadow", "port": SHADOW_PORT, "protocol": "HTTPS",
         "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secrets.fleet_tls}]},
         "allowedRoutes": {"namespaces": {"from": "Same"}}},
    ]
    out.append(_gateway(ctx, FLEET, fleet_listeners))
    out.append({
        "apiVersion": f"{EG}/v1alpha1", "kind": "ClientTrafficPolicy",
        "metadata": meta.metadata("fleet-mtls", ns, _lbl(ctx, "policy", "fleet-mtls")),
        "spec": {"targetRefs": [{"group": GW, "kind": "Gateway", "name": FLEET}],
                 "tls": {"minVersion": "1.3", "clientValidation": {
                     "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": secrets.fleet_ca}]}}},
    })
    if sg.listeners:
        listeners = [{"name": name, "hostname": region_host(r, ctx.domain, cls), "port": 443, "protocol": "HTTPS",
                      "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secrets.public_tls}]},
                      "allowedRoutes": {"namespaces": {"from": "Same"}}} for name, r, cls in sg.listeners]
        out.append(_gateway(ctx, PUBLIC, listeners))
        out.append({
            "apiVersion": f"{EG}/v1alpha1", "kind": "ClientTrafficPolicy",
            "metadata": meta.metadata("public-tls", ns, _lbl(ctx, "policy", "public-tls")),
            "spec": {"targetRefs": [{"group": GW, "kind": "Gateway", "name": PUBLIC}],
                     "tls": {"minVersion": "1.2"}},
        })
    for name in [FLEET] + ([PUBLIC] if sg.listeners else []):
        # Tenants' request rates at the entry (the fleet gateway only hears other sites' entries, over mTLS).
        limits = edge_auth.request_rate_limit(tenants) if name == PUBLIC else {}
        out.append({
            "apiVersion": f"{EG}/v1alpha1", "kind": "BackendTrafficPolicy",
            "metadata": meta.metadata(f"{name}-resilience", ns, _lbl(ctx, "policy", f"{name}-resilience")),
            "spec": {"targetRefs": [{"group": GW, "kind": "Gateway", "name": name}], **resilience(),
                     **({"rateLimit": limits} if limits else {})},
        })
    return out


def _gateway(ctx: SiteContext, name: str, listeners: list[dict]) -> dict:
    return {
        "apiVersion": f"{GW}/v1", "kind": "Gateway",
        "metadata": meta.metadata(name, ctx.gateway_namespace, _lbl(ctx, "gateway", name)),
        "spec": {"gatewayClassName": GATEWAY_CLASS,
                 "infrastructure": {"parametersRef": {"group": EG, "kind": "EnvoyProxy", "name": f"{name}-proxy"}},
                 "listeners": listeners},
    }


def resilience() -> dict:
    """Passive health checks eject failing endpoints, so Envoy moves traffic to the next priority
    (next-closest site); a retry covers the request that found out."""
    return {
        "loadBalancer": {"type": "LeastRequest"},
        "healthCheck": {"passive": {"consecutive5XxErrors": 5, "consecutiveGatewayErrors": 3, "interval": "10s",
                                    "baseEjectionTime": "30s", "maxEjectionPercent": 100}},
        "retry": {"numRetries": 2, "retryOn": {"triggers": ["connect-failure", "reset", "retriable-status-codes"],
                                               "httpStatusCodes": [503]}},
    }


# --------------------------------------------------------------------------- backends


def local_backends(ctx: SiteContext, env: Environment, local: dict[str, int]) -> list[dict]:
    """A Backend (and, for LLMs, an AIServiceBackend) per variant of every locally placed pipeline."""
    out = []
    ns = ctx.gateway_namespace
    for name in sorted(local):
        p = env.pipeline(name)
        for variant in variant_weights(p, 1):
            host, port = local_target(p, variant)
            bname = local_backend(p, variant)
            lbls = _lbl(ctx, "backend", bname, p.name, p.privacy_tier.value)
            out.append({"apiVersion": f"{EG}/v1alpha1", "kind": "Backend", "metadata": meta.metadata(bname, ns, lbls),
                        "spec": {"endpoints": [{"fqdn": {"hostname": host, "port": port}}]}})
            if p.is_llm:
                out.append({"apiVersion": f"{AIG}/v1beta1", "kind": "AIServiceBackend",
                            "metadata": meta.metadata(bname, ns, lbls),
                            "spec": {"schema": {"name": "OpenAI", "version": "v1"},
                                     "backendRef": {"group": EG, "kind": "Backend", "name": bname}}})
    return out


def site_backends(ctx: SiteContext, needs: set[tuple[str, str]], secrets: GatewaySecrets) -> list[dict]:
    """Backends for other sites' fleet gateways (and this site's own, for fallbacks and mirrors).
    `needs`: (kind, site) with kind in {"site", "fallback", "shadow", "ai"}."""
    out = []
    ns = ctx.gateway_namespace
    for kind, site in sorted(needs):
        host = fleet_host(site, ctx.domain)
        tls = {"sni": host, "minVersion": "1.3",
               "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": secrets.fleet_ca}],
               "clientCertificateRef": {"kind": "Secret", "name": secrets.fleet_client_tls}}
        if kind == "ai":
            name = site_backend(site)
            out.append({"apiVersion": f"{AIG}/v1beta1", "kind": "AIServiceBackend",
                        "metadata": meta.metadata(name, ns, _lbl(ctx, "backend", name)),
                        "spec": {"schema": {"name": "OpenAI", "version": "v1"},
                                 "backendRef": {"group": EG, "kind": "Backend", "name": name}}})
            continue
        name = {"site": site_backend(site), "fallback": site_backend(site, fallback=True),
                "shadow": shadow_backend(site)}[kind]
        spec: dict = {"endpoints": [{"fqdn": {"hostname": host, "port": SHADOW_PORT if kind == "shadow" else FLEET_PORT}}],
                      "tls": tls}
        if kind == "fallback":
            spec["fallback"] = True
        out.append({"apiVersion": f"{EG}/v1alpha1", "kind": "Backend",
                    "metadata": meta.metadata(name, ns, _lbl(ctx, "backend", name)), "spec": spec})
    return out


# --------------------------------------------------------------------------- routes


def llm_costs() -> list[dict]:
    return [{"metadataKey": key, "type": kind} for key, kind in planning.LLM_TOKEN_COSTS]


def entry_route(ctx: SiteContext, env: Environment, route: RegionRoute, mirror: Mirror | None,
                needs: set[tuple[str, str]]) -> dict:
    """The route of one pipeline for one user region at its entry gateway."""
    p = env.pipeline(route.pipeline)
    ns = ctx.gateway_namespace
    name = entry_route_name(p.name, route.region)
    # a pipeline raised by what it reads (infra.dataflow) enters where its effective tier may be decrypted
    tier = effective_tier(env, p)
    lbls = _lbl(ctx, "route", name, p.name, tier.value)
    lbls[meta.USER_REGION] = route.region
    section = planning.listener_name(route.region, planning.entry_class(tier))
    parent = [{"group": GW, "kind": "Gateway", "name": PUBLIC, "sectionName": section}]
    if p.is_llm:
        refs = []
        for b in route.backends:
            if b.site == ctx.site:
                for variant, w in variant_weights(p, b.weight).items():
                    refs.append({"name": local_backend(p, variant), "weight": w, "priority": b.priority})
            else:
                needs.update({("site", b.site), ("ai", b.site)})
                refs.append({"name": site_backend(b.site), "weight": b.weight, "priority": b.priority})
        return {"apiVersion": f"{AIG}/v1beta1", "kind": "AIGatewayRoute", "metadata": meta.metadata(name, ns, lbls),
                "spec": {"parentRefs": parent, "llmRequestCosts": llm_costs(), "rules": [{
                    "name": "serve",
                    "matches": [{"headers": [{"type": "Exact", "name": MODEL_HEADER,
                                              "value": planning.served_model_name(p)}]}],
                    "backendRefs": refs, "timeouts": {"request": LLM_REQUEST_TIMEOUT}}]}}
    refs = []
    for b in route.backends:
        if b.priority == 0 and b.site == ctx.site:
            for variant, w in variant_weights(p, b.weight).items():
                refs.append({"group": EG, "kind": "Backend", "name": local_backend(p, variant), "weight": w})
        elif b.priority == 0:
            needs.add(("site", b.site))
            refs.append({"group": EG, "kind": "Backend", "name": site_backend(b.site), "weight": b.weight})
        elif b.priority == 1:
            # Envoy Gateway has one fallback level for HTTPRoutes: the next-closest site.
            needs.add(("fallback", b.site))
            refs.append({"group": EG, "kind": "Backend", "name": site_backend(b.site, fallback=True), "weight": 1})
    filters: list[dict] = [{"type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": PIPELINE_HEADER, "value": p.name}]}}]
    if p.engine.kind == "cpu":
        filters.append({"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch",
                                                                      "replacePrefixMatch": "/"}}})
    if mirror is not None:
        needs.add(("shadow", mirror.target_site))
        filters.append({"type": "RequestMirror", "requestMirror": {
            "backendRef": {"group": EG, "kind": "Backend", "name": shadow_backend(mirror.target_site)},
            "percent": int(round(mirror.percent))}})
    return {"apiVersion": f"{GW}/v1", "kind": "HTTPRoute", "metadata": meta.metadata(name, ns, lbls),
            "spec": {"parentRefs": parent, "rules": [{
                "name": "serve",
                "matches": [{"path": {"type": "PathPrefix", "value": match_path(p)}}],
                "filters": filters, "backendRefs": refs,
                "timeouts": {"request": request_timeout(p)}}]}}


def request_timeout(p: Pipeline) -> str:
    return f"{int(max(1000, p.latency.p99_ms * 4))}ms"


def fleet_route(ctx: SiteContext, env: Environment, pipeline: str) -> dict:
    """Requests other sites send here for a locally placed pipeline: to the local variants (A/B weights)."""
    p = env.pipeline(pipeline)
    ns = ctx.gateway_namespace
    name = fleet_route_name(p.name)
    lbls = _lbl(ctx, "route", name, p.name, p.privacy_tier.value)
    parent = [{"group": GW, "kind": "Gateway", "name": FLEET, "sectionName": "fleet"}]
    weights = variant_weights(p, planning.WEIGHT_TOTAL)
    if p.is_llm:
        return {"apiVersion": f"{AIG}/v1beta1", "kind": "AIGatewayRoute", "metadata": meta.metadata(name, ns, lbls),
                "spec": {"parentRefs": parent, "llmRequestCosts": llm_costs(), "rules": [{
                    "name": "serve",
                    "matches": [{"headers": [{"type": "Exact", "name": MODEL_HEADER,
                                              "value": planning.served_model_name(p)}]}],
                    "backendRefs": [{"name": local_backend(p, v), "weight": w} for v, w in weights.items()],
                    "timeouts": {"request": LLM_REQUEST_TIMEOUT}}]}}
    return {"apiVersion": f"{GW}/v1", "kind": "HTTPRoute", "metadata": meta.metadata(name, ns, lbls),
            "spec": {"parentRefs": parent, "rules": [{
                "name": "serve",
                "matches": [{"headers": [{"type": "Exact", "name": PIPELINE_HEADER, "value": p.name}]}],
                "backendRefs": [{"group": EG, "kind": "Backend", "name": local_backend(p, v), "weight": w}
                                for v, w in weights.items()],
                "timeouts": {"request": request_timeout(p)}}]}}


def shadow_route(ctx: SiteContext, env: Environment, m: Mirror) -> dict:
    """Mirrored requests of `m.source` arriving on the shadow listener go to the local `m.target`."""
    src, tgt = env.pipeline(m.source), env.pipeline(m.target)
    ns = ctx.gateway_namespace
    name = meta.k8s_name("shadow", m.source, "to", m.target)
    lbls = _lbl(ctx, "route", name, tgt.name, effective_tier(env, tgt).value)
    match: dict = {"headers": [{"type": "Exact", "name": PIPELINE_HEADER, "value": src.name}]}
    filters: list[dict] = [{"type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": PIPELINE_HEADER, "value": tgt.name}]}}]
    if src.engine.kind == "triton" and tgt.engine.kind == "triton":
        match["path"] = {"type": "PathPrefix", "value": match_path(src)}
        filters.append({"type": "URLRewrite", "urlRewrite": {"path": {
            "type": "ReplacePrefixMatch", "replacePrefixMatch": match_path(tgt)}}})
    return {"apiVersion": f"{GW}/v1", "kind": "HTTPRoute", "metadata": meta.metadata(name, ns, lbls),
            "spec": {"parentRefs": [{"group": GW, "kind": "Gateway", "name": FLEET, "sectionName": "shadow"}],
                     "rules": [{"name": "mirror", "matches": [match], "filters": filters,
                                "backendRefs": [{"group": EG, "kind": "Backend", "name": local_backend(tgt, v), "weight": w}
                                                for v, w in variant_weights(tgt, planning.WEIGHT_TOTAL).items()],
                                "timeouts": {"request": request_timeout(tgt)}}]}}


# --------------------------------------------------------------------------- token budgets


def rate_limit_policies(ctx: SiteContext, env: Environment, sg: SiteGateway) -> list[dict]:
    """Per LLM pipeline entering here: each tenant's token share of its budget per minute, counted from the
    token usage the AI Gateway filter writes into metadata (request cost 0: only checked on the way in). A route's
    own policy replaces the Gateway's, so it repeats the tenants' request-rate limits and the resilience settings."""
    out = []
    ns = ctx.gateway_namespace
    by_pipeline: dict[str, list[TenantBudget]] = {}
    for b in sg.budgets:
        by_pipeline.setdefault(b.pipeline, []).append(b)
    for pipeline, budgets in sorted(by_pipeline.items()):
        regions = sorted(r.region for r in sg.routes if r.pipeline == pipeline)
        if not regions:
            continue
        p = env.pipeline(pipeline)
        name = meta.k8s_name(pipeline, "token-budgets")
        rules = [{
            "clientSelectors": [{"headers": [{"type": "Exact", "name": TENANT_HEADER, "value": b.tenant}]}],
            "limit": {"requests": b.tokens_per_minute, "unit": "Minute"},
            "cost": {"request": {"from": "Number", "number": 0},
                     "response": {"from": "Metadata", "metadata": {
                         "namespace": planning.LLM_TOKEN_METADATA_NAMESPACE, "key": "llm_total_token"}}},
            "shared": True,
        } for b in sorted(budgets, key=lambda b: b.tenant)]
        out.append({"apiVersion": f"{EG}/v1alpha1", "kind": "BackendTrafficPolicy",
                    "metadata": meta.metadata(name, ns, _lbl(ctx, "policy", name, p.name, p.privacy_tier.value)),
                    "spec": {"targetRefs": [{"group": GW, "kind": "HTTPRoute", "name": entry_route_name(pipeline, r)}
                                            for r in regions],
                             "rateLimit": {"global": {"rules": rules}, **edge_auth.request_rate_limit(env.tenants)},
                             **resilience()}})
    return out


def quota_policies(ctx: SiteContext, env: Environment, sg: SiteGateway) -> list[dict]:
    """On serving sites: no tenant exceeds its whole budget at one site, whatever entry sent the tokens."""
    out = []
    ns = ctx.gateway_namespace
    for pipeline in sorted(sg.local):
        p = env.pipeline(pipeline)
        tenants = sg.full_budgets.get(pipeline, {})
        if not p.is_llm or not tenants:
            continue
        name = meta.k8s_name(pipeline, "quota")
        out.append({"apiVersion": f"{AIG}/v1alpha1", "kind": "QuotaPolicy",
                    "metadata": meta.metadata(name, ns, _lbl(ctx, "policy", name, p.name, p.privacy_tier.value)),
                    "spec": {"targetRefs": [{"group": AIG, "kind": "AIServiceBackend", "name": local_backend(p, v)}
                                            for v in variant_weights(p, 1)],
                             "perModelQuotas": [{"modelName": planning.served_model_name(p), "quota": {
                                 "mode": "Shared",
                                 "bucketRules": [{
                                     "clientSelectors": [{"headers": [{"type": "Exact", "name": TENANT_HEADER,
                                                                       "value": t}]}],
                                     "quota": {"duration": "1m", "limit": n}} for t, n in sorted(tenants.items())]}}]}})
    return out


def security_policies(ctx: SiteContext, env: Environment, sg: SiteGateway) -> list[dict]:
    """The gateway authenticates to local vLLM servers with this site's API key (Secret built by the component)."""
    refs = [{"group": AIG, "kind": "AIServiceBackend", "name": local_backend(env.pipeline(p), v)}
            for p in sorted(sg.local) if env.pipeline(p).is_llm for v in variant_weights(env.pipeline(p), 1)]
    out = []
    for i in range(0, len(refs), 16):  # targetRefs holds at most 16
        name = meta.k8s_name("vllm-api-key", str(i // 16))
        out.append({"apiVersion": f"{AIG}/v1beta1", "kind": "BackendSecurityPolicy",
                    "metadata": meta.metadata(name, ctx.gateway_namespace, _lbl(ctx, "policy", name)),
                    "spec": {"type": "APIKey", "apiKey": {"secretRef": {"name": VLLM_API_KEY_SECRET}},
                             "targetRefs": refs[i:i + 16]}})
    return out


def ratelimit_redis(ctx: SiteContext) -> list[dict]:
    """Counter store of Envoy Gateway's global rate limit service (ephemeral: counters of the current minute)."""
    ns = ctx.gateway_namespace
    lbls = meta.labels("redis", "rate-limit-store", instance=RATELIMIT_REDIS,
                       version=meta.image_version(ctx.images.redis), site=ctx.site, tier="internal")
    sel = meta.selector(lbls)
    c = pods.container("redis", ctx.images.redis, args=["--save", "", "--appendonly", "no", "--protected-mode", "no",
                                                      "--maxmemory", "200mb", "--maxmemory-policy", "volatile-ttl"],
                       ports=[{"name": "redis", "containerPort": 6379, "protocol": "TCP"}], res=pods.resources(0.5, 0.25),
                       readiness=pods.exec_probe(["redis-cli", "ping"], period=5),
                       liveness=pods.tcp_probe("redis", period=15), mounts=[{"name": "data", "mountPath": "/data"}])
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta.metadata(RATELIMIT_REDIS, ns, lbls),
         "spec": {"replicas": 1, "selector": {"matchLabels": sel},
                  "template": {"metadata": {"labels": lbls},
                               "spec": pods.pod_spec([c], volumes=[pods.empty_dir("data", size_limit="256Mi")],
                                                     affinity=placement_affinity("internal", ctx.privacy_zones),
                                                     tolerations=tolerations("internal", False, ctx.privacy_zones) or None)}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta.metadata(RATELIMIT_REDIS, ns, lbls),
         "spec": {"type": "ClusterIP", "selector": sel,
                  "ports": [{"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"}]}},
    ]


def ratelimit_url(ctx: SiteContext) -> str:
    return f"{service_fqdn(RATELIMIT_REDIS, ctx.gateway_namespace)}:6379"


def dns_annotations(ctx: SiteContext, env: Environment, sg: SiteGateway) -> tuple[dict[str, str], dict[str, str]]:
    """external-dns annotations of the public and the fleet gateway's Service: the hostnames each answers here, and on
    a cloud site latency-based routing for the public names."""
    site = env.site(ctx.site)
    region = site.region if isinstance(site, CloudSite) and ctx.site_kind == "cloud" else None
    public = dns.service_annotations((region_host(r, ctx.domain, cls) for _, r, cls in sg.listeners),
                                     set_identifier=ctx.site, aws_region=region)
    return public, dns.service_annotations([ctx.fleet_host])


def site_objects(ctx: SiteContext, env: Environment, sg: SiteGateway, secrets: GatewaySecrets,
                 public_lb: dict, internal_lb: dict) -> list[dict]:
    """Every gateway object of one site (except Secrets and Helm releases, which the component adds)."""
    public_dns, fleet_dns = dns_annotations(ctx, env, sg)
    public_lb, internal_lb = {**public_lb, **public_dns}, {**internal_lb, **fleet_dns}
    needs: set[tuple[str, str]] = set()
    mirrors = {m.source: m for m in sg.mirrors_out}
    routes = [entry_route(ctx, env, r, mirrors.get(r.pipeline), needs) for r in sg.routes]
    routes += [fleet_route(ctx, env, p) for p in sorted(sg.local)]
    routes += [shadow_route(ctx, env, m) for m in sg.mirrors_in]
    out = gateways(ctx, sg, secrets, public_lb, internal_lb, env.tenants)
    if sg.listeners:
        out.append(edge_auth.security_policy(ctx, PUBLIC))
    out += local_backends(ctx, env, sg.local)
    out += site_backends(ctx, needs, secrets)
    out += routes
    out += rate_limit_policies(ctx, env, sg)
    out += quota_policies(ctx, env, sg)
    out += security_policies(ctx, env, sg)
    if sg.budgets:
        out += ratelimit_redis(ctx)
    return out
