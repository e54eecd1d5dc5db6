"""Spec + placement plan -> the local control planes of the `local` stack (one per site). Pure.

Every node is a kwok fake node: no GPU and no rack is real. The nodes carry exactly the labels,
taints and capacities the real fleet's nodes carry, so the scheduler places the serving stack as it
would in production:

* cloud site: the plan's instances (``SitePlan.nodes``: instance type -> count) labelled and tainted
  like the Karpenter NodePools of ``clusters.sizing.node_pools`` (site, privacy zone, GPU product,
  ``nvidia.com/gpu`` taint), plus instance type, zone (round robin over the site's zones) and region;
  GPU instances advertise ``nvidia.com/gpu``. Headroom: one spare node per GPU pool (what Karpenter
  would add for a rolling update, within ``max_nodes``) and a small untainted system pool (the
  cheapest CPU instance type) for the gateway, monitoring and controllers.
* datacenter: one node per host of the Ansible inventory (``datacenter.inventory``), with its
  datacenter/rack/zone/privacy-zone labels and pii/restricted taints; capacity is the host minus the
  kubelet's system reservation, as on the real racks. GPU hosts advertise ``nvidia.com/gpu`` and
  the GPU-product label that GPU feature discovery would set.

Every node also carries ``hybridml.io/simulated=true``, ``hybridml.io/site`` and
``hybridml.io/site-kind``. Cluster names are the kube contexts the Pulumi program expects
(``clusters.local_cluster.default_context``: ``hybridml-<site>``).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from clusters.local_cluster import default_context
from clusters.sizing import NodePoolPlan, batch_nodes_at, node_pools, site_privacy_zone
from datacenter.inventory import build_inventory
from datacenter.kwok import allocatable
from hybridml.local.nodes import ClusterDef, NodeDef
from infra import labels
from infra.errors import InvalidValue
from infra.kube import Taint, parse_taint
from infra.spec import CloudSite, Datacenter, Environment, InstanceType
from policies.placement.plan import PlacementPlan

SYSTEM_POOL = "system"
MAX_PODS = 110
SPARE_NODES_PER_GPU_POOL = 1
SYSTEM_NODES = 2
# Used only when a cloud site lists no CPU-only instance type.
FALLBACK_SYSTEM_TYPE = InstanceType(name="simulated.system", vcpus=8, memory_gib=32, hourly_usd=0.01)


def cluster_name(site: str) -> str:
    """The local cluster (and kube context) of a site."""
    return default_context(site)


def _node_name(*parts: str) -> str:
    name = "-".join(parts).lower()
    return re.sub(r"[^a-z0-9-]+", "-", name).strip("-")[:63]


def _mi(gib: float) -> str:
    return f"{int(math.floor(gib * 1024))}Mi"


def _common(site: CloudSite | Datacenter, kind: str) -> dict[str, str]:
    return {labels.SITE: site.name, labels.SITE_KIND: kind, labels.SIMULATED: "true"}


def _instance_node(site: CloudSite, it: InstanceType, index: int, pool_name: str, pool_labels: dict[str, str],
                   taints: Iterable[tuple[str, str, str]], capacity_type: str) -> NodeDef:
    zone = site.zones[index % len(site.zones)] if site.zones else site.region
    node_labels = {
        **_common(site, "cloud"),
        **pool_labels,
        labels.INSTANCE_TYPE: it.name,
        labels.REGION: site.region,
        labels.ZONE: zone,
        labels.KARPENTER_NODEPOOL: pool_name,           # what Karpenter puts on the nodes of a pool
        labels.KARPENTER_CAPACITY_TYPE: capacity_type,
    }
    capacity = {"cpu": str(it.vcpus), "memory": _mi(it.memory_gib), "pods": str(MAX_PODS)}
    if it.gpu:
        capacity[labels.GPU_RESOURCE] = str(it.gpu.count)
        node_labels[labels.GPU_PRODUCT] = labels.gpu_product(it.gpu.type)
    return NodeDef(name=_node_name(site.name, pool_name, it.name, str(index)), labels=node_labels,
                   taints=[Taint(k, v, e) for k, v, e in taints], capacity=capacity)


def _spare_counts(site: CloudSite, pool: NodePoolPlan, planned: dict[str, int]) -> dict[str, int]:
    """Spare GPU nodes for a pool: the largest instance type that still has room under max_nodes."""
    by_name = {it.name: it for it in site.instance_types}
    types = sorted((by_name[n] for n in pool.instance_types), key=lambda it: (-(it.gpu.count if it.gpu else 0),
                                                                             -it.vcpus, it.name))
    spares: dict[str, int] = {}
    for _ in range(SPARE_NODES_PER_GPU_POOL):
        for it in types:
            used = planned.get(it.name, 0) + spares.get(it.name, 0)
            if it.max_nodes is None or used < it.max_nodes:
                spares[it.name] = spares.get(it.name, 0) + 1
                break
    return spares


def system_instance_type(site: CloudSite) -> InstanceType:
    """The cheapest CPU-only instance type with at least 4 vCPUs (the system pool's nodes)."""
    cpu_types = [it for it in site.instance_types if it.gpu is None and it.vcpus >= 4]
    if not cpu_types:
        return FALLBACK_SYSTEM_TYPE
    return min(cpu_types, key=lambda it: (it.hourly_usd, it.vcpus, it.name))


def cloud_nodes(env: Environment, site: CloudSite, plan: PlacementPlan) -> list[NodeDef]:
    sp = plan.site(site.name)
    by_name = {it.name: it for it in site.instance_types}
    nodes: list[NodeDef] = []
    batch = batch_nodes_at(plan, site.name)
    for pool in node_pools(env, site, sp, batch):
        planned = {n: c for n, c in sp.nodes.items() if n in pool.instance_types and c > 0}
        counts = dict(planned)
        if pool.gpu_type:   # spares within max_nodes beside the plan's and the batch stage's nodes
            taken = {n: planned.get(n, 0) + batch.get(n, 0) for n in pool.instance_types}
            for n, extra in _spare_counts(site, pool, taken).items():
                counts[n] = counts.get(n, 0) + extra
        capacity_type = pool.capacity_types[0] if pool.capacity_types else "on-demand"
        for it_name in sorted(counts):
            for i in range(counts[it_name]):
                nodes.append(_instance_node(site, by_name[it_name], i, pool.name, pool.labels, pool.taints,
                                            capacity_type))
        # the batch stage's nodes (what Karpenter adds while runs go), as the capacity type it bought them
        for bn in (plan.batch.nodes_at(site.name) if plan.batch else []):
            if bn.instance_type in pool.instance_types:
                first = counts.get(bn.instance_type, 0)
                counts[bn.instance_type] = first + bn.nodes
                nodes += [_instance_node(site, by_name[bn.instance_type], first + i, pool.name, pool.labels, pool.taints,
                                         bn.capacity_type) for i in range(bn.nodes)]
    zone = site_privacy_zone(site)
    system = system_instance_type(site)
    for i in range(SYSTEM_NODES):
        nodes.append(_instance_node(site, system, i, SYSTEM_POOL, {labels.PRIVACY_ZONE: zone}, (), "on-demand"))
    return nodes


def planned_cloud_nodes(env: Environment, site: CloudSite, plan: PlacementPlan) -> list[NodeDef]:
    """Exactly the instances the plan buys at a cloud site (``SitePlan.nodes``), built as `cloud_nodes` builds
    them, without its spare GPU nodes and system pool: for tests that judge a plan on its own nodes."""
    sp = plan.site(site.name)
    by_name = {it.name: it for it in site.instance_types}
    nodes: list[NodeDef] = []
    for pool in node_pools(env, site, sp):
        capacity_type = pool.capacity_types[0] if pool.capacity_types else "on-demand"
        for it_name in sorted(n for n in pool.instance_types if sp.nodes.get(n, 0) > 0):
            nodes += [_instance_node(site, by_name[it_name], i, pool.name, pool.labels, pool.taints, capacity_type)
                      for i in range(sp.nodes[it_name])]
    return nodes


def datacenter_nodes(env: Environment, site: Datacenter) -> list[NodeDef]:
    inv = build_inventory(env, site.name)
    gpus = {h.name: h.gpu for _, h in site.all_hosts() if h.gpu}
    nodes: list[NodeDef] = []
    for host in inv.hosts:
        capacity = allocatable(host, MAX_PODS)   # the host minus the kubelet's system reservation
        node_labels = {**_common(site, "datacenter"), **host.labels}
        gpu = gpus.get(host.name)
        if gpu:
            capacity[labels.GPU_RESOURCE] = str(gpu.count)
            node_labels[labels.GPU_PRODUCT] = labels.gpu_product(gpu.type)
        nodes.append(NodeDef(name=host.name, labels=node_labels, taints=[parse_taint(t) for t in host.taints],
                             capacity=capacity))
    return nodes


def clusters_from_spec(env: Environment, plan: PlacementPlan, sites: Sequence[str] | None = None) -> list[ClusterDef]:
    """One ClusterDef per site of the spec (spec order), or per site in ``sites``."""
    wanted = set(sites) if sites is not None else None
    unknown = sorted((wanted or set()) - {s.name for s in env.sites})
    if unknown:
        raise InvalidValue(f"no site {', '.join(unknown)} in environment {env.name!r}")
    out: list[ClusterDef] = []
    for site in env.sites:
        if wanted is not None and site.name not in wanted:
            continue
        if isinstance(site, CloudSite):
            nodes = cloud_nodes(env, site, plan)
        else:
            nodes = datacenter_nodes(env, site)
        out.append(ClusterDef(name=cluster_name(site.name), nodes=nodes))
    return out


__all__ = ["cloud_nodes", "cluster_name", "clusters_from_spec", "datacenter_nodes", "planned_cloud_nodes", "system_instance_type"]
