"""Site facts for policy checks, from the spec (and the plan). Pure."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infra import labels as L
from infra.spec import CloudSite, Environment
from policies.rules.base import Context, ResourceView, SiteFacts

if TYPE_CHECKING:
    from policies.placement.plan import PlacementPlan


def site_facts(env: Environment) -> dict[str, SiteFacts]:
    out = {}
    for s in env.sites:
        if isinstance(s, CloudSite):
            tiers, gpus = s.privacy_tiers, sorted(s.gpu_types)
        else:
            tiers = s.allowed_tiers
            gpus = sorted({h.gpu.type for _, h in s.all_hosts() if h.gpu})
        version = tuple(int(x) for x in s.kubernetes_version.split(".")[:2]) if isinstance(s, CloudSite) else None
        out[s.name] = SiteFacts(s.name, s.kind, tuple(t.value for t in tiers), tuple(gpus),
                                (version[0], version[1]) if version else None)
    return out


def context_for(env: Environment, plan: PlacementPlan | None = None) -> Context:
    return Context(sites=site_facts(env), plan=plan, env=env, gateway_namespaces=(L.GATEWAY_NAMESPACE,))


def cluster_of(provider_name: str | None, props: dict[str, Any], sites: dict[str, SiteFacts]) -> str | None:
    """The site a resource targets: from its Kubernetes provider's name (`<site>-...`), else its site label.

    The provider is the ground truth of where an object lands; the label is the fallback for
    providers named otherwise (e.g. the default provider in a one-cluster stack).
    """
    if provider_name:
        for site in sorted(sites, key=len, reverse=True):
            if provider_name == site or provider_name.startswith(site + "-"):
                return site
    labels = ((props or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(L.SITE)


def view(resource_type: str, name: str, props: dict[str, Any], provider_name: str | None, sites: dict[str, SiteFacts],
         urn: str = "") -> ResourceView:
    cluster = cluster_of(provider_name, props, sites) if resource_type.startswith("kubernetes:") else None
    return ResourceView(resource_type, name, props or {}, cluster=cluster, urn=urn)
