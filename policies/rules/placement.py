"""Placement and privacy: what may run on which cluster, and whether the plan keeps its promises."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from infra import labels as L
from infra.dataflow import data_flows
from infra.spec import PrivacyTier
from policies.placement.packing import packing_problems
from policies.rules.base import Context, Enforcement, ResourceView, Rule, Severity
from policies.rules.podspec import containers, gpu_request, pod_specs

DATA_KINDS = {"StatefulSet", "FeatureStore", "FlinkDeployment"}
RUNTIME_TEMPLATES = {"ServingRuntime", "ClusterServingRuntime"}


def _tier(r: ResourceView, ctx: Context | None = None) -> str | None:
    """The tier a resource handles: its label (else its namespace's), and for a pipeline's pods at least the
    pipeline's effective tier (infra.dataflow: raised by what it reads), whatever the label says."""
    tier: str | None = r.labels.get(L.PRIVACY_TIER)
    if not tier:
        ns = r.metadata.get("namespace") or ""
        tier = ns.removeprefix("ml-") if ns.startswith("ml-") else None
    name = r.labels.get(L.PIPELINE)
    if ctx is not None and ctx.env is not None and name in data_flows(ctx.env).tiers and any(pod_specs(r.kind, r.props)):
        effective = data_flows(ctx.env).tiers[name].effective
        if tier not in _TIERS or effective.rank > PrivacyTier(tier).rank:
            tier = effective.value
    return tier


_TIERS = {t.value for t in PrivacyTier}


def privacy_on_allowed_site(r: ResourceView, ctx: Context) -> Iterable[str]:
    if not r.is_kubernetes or r.cluster is None:
        return
    tier = _tier(r, ctx)
    if tier not in ("pii", "restricted"):
        return
    site = ctx.sites.get(r.cluster)
    if site is None:
        yield f"{tier} object on unknown cluster {r.cluster!r}"
    elif tier not in site.privacy_tiers:
        yield f"{tier} object on {site.kind} cluster {site.name!r}, which holds only {', '.join(site.privacy_tiers)}"


def _required_zone_values(spec: dict[str, Any]) -> list[list[str]]:
    """The values of every required `privacy-zone In [...]` node-affinity expression, per selector term."""
    terms = ((((spec.get("affinity") or {}).get("nodeAffinity") or {})
              .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or [])
    out = []
    for term in terms:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") == L.PRIVACY_ZONE and expr.get("operator") == "In":
                out.append(sorted(expr.get("values") or []))
    selector = (spec.get("nodeSelector") or {}).get(L.PRIVACY_ZONE)
    if selector:
        out.append([selector])
    return out


def pinned_to_home_zone(r: ResourceView, ctx: Context) -> Iterable[str]:
    """At a datacenter a tiered pod runs only in its tier's home zone (the placement counted its capacity
    there, infra.labels.home_zone) and tolerates that zone's taint when the zone is pii/restricted."""
    if not r.is_kubernetes or r.cluster is None or ctx.env is None:
        return
    tier = _tier(r, ctx)
    facts = ctx.sites.get(r.cluster)
    if tier not in _TIERS or facts is None or facts.kind != "datacenter":
        return
    if r.kind in RUNTIME_TEMPLATES:
        return   # merged into each InferenceService's predictor pod, which carries its own pinning
    site = ctx.env.site(r.cluster)
    home = L.home_zone(PrivacyTier(tier), {rack.privacy_zone.value for rack in site.racks})
    if home is None:
        return   # the tier may not be here at all: privacy-tier-on-allowed-cluster says so
    for where, _, spec in pod_specs(r.kind, r.props):
        pinned = _required_zone_values(spec)
        if not pinned or any(values != [home] for values in pinned):
            yield (f"{where}: a {tier} pod on {r.cluster} must require node affinity {L.PRIVACY_ZONE} In [{home}] "
                   f"(its home zone), has {pinned or 'none'}")
        if PrivacyTier(home).is_sensitive and not any(
                t.get("key") == L.PRIVACY_TAINT_KEY and t.get("value") == home and t.get("effect") in (None, "NoSchedule")
                for t in spec.get("tolerations") or []):
            yield f"{where}: a {tier} pod on {r.cluster} does not tolerate the {L.PRIVACY_TAINT_KEY}={home} taint of its home zone"


def gpu_type_on_cluster(r: ResourceView, ctx: Context) -> Iterable[str]:
    if not r.is_kubernetes or r.cluster is None:
        return
    site = ctx.sites.get(r.cluster)
    products = {L.gpu_product(t): t for t in (site.gpu_types if site else ())}
    for where, _, spec in pod_specs(r.kind, r.props):
        wants = any(gpu_request(c) for _, c in containers(spec))
        if not wants:
            continue
        product = (spec.get("nodeSelector") or {}).get(L.GPU_PRODUCT)
        if site is None or not site.gpu_types:
            yield f"{where} requests GPUs on cluster {r.cluster!r}, which has none"
        elif product and product not in products:
            yield f"{where} selects {product} but {r.cluster!r} offers {', '.join(sorted(products))}"


def gpu_tolerations_and_selector(r: ResourceView, ctx: Context) -> Iterable[str]:
    if not r.is_kubernetes:
        return
    for where, _, spec in pod_specs(r.kind, r.props):
        if not any(gpu_request(c) for _, c in containers(spec)):
            continue
        tolerations = spec.get("tolerations") or []
        if not any(t.get("key") == L.GPU_TAINT_KEY and t.get("effect") in (None, "NoSchedule") for t in tolerations):
            yield f"{where} requests GPUs without a toleration for the {L.GPU_TAINT_KEY} taint"
        selector = spec.get("nodeSelector") or {}
        affinity_keys = {expr.get("key") for term in (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                                                       .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
                         .get("nodeSelectorTerms", []) for expr in term.get("matchExpressions", [])}
        if L.GPU_PRODUCT not in selector and L.GPU_PRODUCT not in affinity_keys:
            yield f"{where} requests GPUs without selecting {L.GPU_PRODUCT}"
        for cw, c in containers(spec):
            res = c.get("resources") or {}
            req = (res.get("requests") or {}).get(L.GPU_RESOURCE)
            lim = (res.get("limits") or {}).get(L.GPU_RESOURCE)
            if req is not None and lim is not None and str(req) != str(lim):
                yield f"{where}.{cw} GPU requests ({req}) differ from limits ({lim})"


def plan_meets_slo(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    if ctx.plan is None:
        return
    for pp in ctx.plan.pipelines:
        for region, row in pp.latency_ms.items():
            for site, ms in row.items():
                if ms > pp.slo_p99_ms + 1e-9:
                    yield f"pipeline {pp.name}", f"{region} -> {site}: {ms:g} ms > SLO {pp.slo_p99_ms:g} ms"


def plan_privacy(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    if ctx.plan is None:
        return
    known = data_flows(ctx.env).tiers if ctx.env is not None else {}
    for pp in ctx.plan.pipelines:
        tier = known[pp.name].effective.value if pp.name in known else pp.privacy_tier   # the spec's, not the plan's word
        for site in pp.replicas:
            facts = ctx.sites.get(site)
            if facts and tier not in facts.privacy_tiers:
                yield f"pipeline {pp.name}", f"{tier} pipeline placed on {site}, which holds only " \
                                             f"{', '.join(facts.privacy_tiers)}"
    for d in ctx.plan.data:
        for site in d.sites:
            facts = ctx.sites.get(site)
            if facts and d.privacy_tier not in facts.privacy_tiers:
                yield f"{d.kind} {d.name}", f"{d.privacy_tier} data on {site}"


def plan_packs(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    """Every replica and data pod of the plan is on a node group that first-fit decreasing can pack."""
    if ctx.plan is None or ctx.env is None:
        return
    for problem in packing_problems(ctx.env, ctx.plan):
        yield "plan", problem


RULES = [
    Rule("privacy-tier-on-allowed-cluster", "pii/restricted workloads, feature stores and vector DBs run only on "
         "clusters whose site allows the tier.", Severity.critical, Enforcement.mandatory,
         "place it on an own datacenter that allows the tier (or list the tier in the site's privacy_tiers)",
         check=privacy_on_allowed_site, group="placement"),
    Rule("privacy-home-zone-pinning", "At a datacenter every tiered pod is pinned to its tier's home zone (node affinity) "
         "and tolerates that zone's taint, as the placement counted its capacity.", Severity.critical,
         Enforcement.mandatory, f"require node affinity {L.PRIVACY_ZONE} In [home zone] and tolerate "
         f"{L.PRIVACY_TAINT_KEY}=<zone>:NoSchedule (workloads/render/model_pods.py placement_affinity, tolerations)",
         check=pinned_to_home_zone, group="placement"),
    Rule("gpu-type-on-cluster", "GPU requests only on clusters that have that GPU type.", Severity.high,
         Enforcement.mandatory, "select a GPU product the cluster offers, or place the pipeline elsewhere",
         check=gpu_type_on_cluster, group="placement"),
    Rule("gpu-pod-scheduling", "GPU pods tolerate the GPU taint, select the GPU product, and request = limit.",
         Severity.high, Enforcement.mandatory,
         f"add a toleration for {L.GPU_TAINT_KEY} and nodeSelector {L.GPU_PRODUCT}; set requests equal to limits",
         check=gpu_tolerations_and_selector, group="placement"),
    Rule("plan-latency-slo", "Every routed user region meets its pipeline's p99 SLO in the plan.", Severity.high,
         Enforcement.mandatory, "re-run placement; relax the SLO or add a closer site", stack_check=plan_meets_slo,
         group="placement"),
    Rule("plan-packs", "Every pod of the plan fits, first-fit decreasing, on the nodes the plan buys or uses.",
         Severity.high, Enforcement.mandatory, "re-run placement (hybridml plan) instead of editing the plan by hand",
         stack_check=plan_packs, group="placement"),
    Rule("plan-privacy", "The plan puts every pipeline and data store on sites that allow its tier.",
         Severity.critical, Enforcement.mandatory, "remove the override that forces it there (pinned_sites)",
         stack_check=plan_privacy, group="placement"),
]
