"""Turn a solver result into a plan that explains itself: what was chosen, what was not, and why."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

from infra.dataflow import pipeline_tier
from infra.spec import CloudSite, Datacenter, Environment, Pipeline
from policies.placement import candidates as cand
from policies.placement import shapes
from policies.placement.eligibility import lookup_p99_ms
from policies.placement.plan import (
    DataPlacement,
    Explanation,
    NodeGroup,
    PipelinePlacement,
    PlacementPlan,
    SitePlan,
)
from policies.placement.rows import CapacityRow, RowKind

if TYPE_CHECKING:
    import numpy as np

    from policies.placement.eligibility import Eligibility
    from policies.placement.milp import Result

TIGHT = 1e-6


class _Vars(Protocol):
    """What the plan reads of the solver's variable index (policies.placement.solver._Vars)."""

    x: dict[tuple[str, str], int]
    n: dict[tuple[str, str], int]
    f: dict[tuple[str, str, str], int]
    z: dict[tuple[str, str], int]
    w: dict[tuple[str, str, str], int]
    u: dict[tuple[str, str, str], int]
    capacity_rows: dict[CapacityRow, tuple[int, float]]


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def _cloud_gpu_capacity(site: CloudSite) -> dict[str, int]:
    """GPUs per type the site can supply within max_nodes and quotas (types without a cap are left out)."""
    out: dict[str, int] = {}
    for it in site.instance_types:
        if not it.gpu:
            continue
        limits = []
        if it.max_nodes is not None:
            limits.append(it.max_nodes)
        if it.quota_family in site.vcpu_quotas:
            limits.append(site.vcpu_quotas[it.quota_family] // it.vcpus)
        if not limits:
            continue
        out[it.gpu.type] = out.get(it.gpu.type, 0) + min(limits) * it.gpu.count
    return out


def _exhausted(env: Environment, v: _Vars, res: Result, nodes: dict[tuple[str, str], int]) -> set[CapacityRow]:
    """Capacity limits with no room left: datacenter rows, quotas within one node, max_nodes reached.

    Cloud GPU/CPU node rows (bound 0) only say that bought nodes are used; they are not limits.
    """
    out: set[CapacityRow] = set()
    for key, (row, ub) in v.capacity_rows.items():
        room = ub - res.row_values[row]
        if key.kind is RowKind.QUOTA:
            site = env.site(key.site)
            assert isinstance(site, CloudSite)  # quota rows exist for cloud sites only
            smallest = min(it.vcpus for it in site.instance_types if it.quota_family == key.family)
            if room < smallest:
                out.add(key)
        elif ub > 0 and room <= 1e-6 and key.kind is not RowKind.MAX_NODES:
            out.add(key)
    for site in env.cloud_sites:
        for it in site.instance_types:
            if it.max_nodes is not None and nodes[(site.name, it.name)] >= it.max_nodes:
                out.add(CapacityRow(RowKind.MAX_NODES, site.name, instance_type=it.name))
    return out


def assemble_plan(env: Environment, el: Eligibility, v: _Vars, res: Result, *, lp_bound: float, elapsed: float,
                  solver: str) -> PlacementPlan:
    val = res.values
    replicas: dict[tuple[str, str], int] = {k: _round(val[i]) for k, i in v.x.items()}
    nodes = {k: _round(val[i]) for k, i in v.n.items()}
    data_at = {k: _round(val[i]) == 1 for k, i in v.z.items()}
    tight_rows = _exhausted(env, v, res, nodes)

    pipelines: list[PipelinePlacement] = []
    for p in env.pipelines:
        demand = el.demand[p.name]
        reps = {s: replicas[(p.name, s)] for s in el.sites[p.name] if replicas[(p.name, s)] > 0}
        routing: dict[str, dict[str, float]] = {}
        latency: dict[str, dict[str, float]] = {}
        for r in demand:
            shares = {s: round(float(val[v.f[(p.name, r, s)]]), 6) for s in el.routes[(p.name, r)]}
            shares = {s: x for s, x in shares.items() if x > 1e-6}
            total = sum(shares.values()) or 1.0
            routing[r] = {s: round(x / total, 6) for s, x in sorted(shares.items())}
            latency[r] = {s: env.user_rtt(r, s) + p.latency.service_ms for s in routing[r]}
        failover = {r: sorted(reps, key=lambda s: (env.user_rtt(r, s), s)) for r in (demand or {})}
        gpus = {s: n * p.gpu.count for s, n in reps.items()} if p.gpu else {}
        cost = sum(shapes.replica_cost(env, p, env.site(s)) * n for s, n in reps.items())
        flows_in = pipeline_tier(env, p)
        pipelines.append(PipelinePlacement(
            name=p.name, engine=p.engine.kind, privacy_tier=flows_in.effective.value,
            declared_privacy_tier=flows_in.declared.value if flows_in.raised else None, replicas=reps, routing=routing,
            latency_ms=latency, slo_p99_ms=p.latency.p99_ms, failover=failover, gpus=gpus,
            cost_usd_per_hour=round(cost, 4), explanation=_explain(env, el, p, reps, routing, tight_rows)))

    data: list[DataPlacement] = []
    for key in sorted({k for k, _ in v.z}):
        kind, name = key.split(":", 1)
        placed = sorted(s for (k, s), on in data_at.items() if k == key and on)
        tier = (next(x for x in env.feature_views if x.name == name) if kind == "feature_view"
                else next(x for x in env.collections if x.name == name)).privacy_tier
        serves: dict[str, dict[str, str]] = {}
        for p in env.pipelines:
            for dep in p.dependencies:
                if f"{dep.kind}:{dep.target}" != key:
                    continue
                for s in (x.name for x in env.sites):
                    if replicas.get((p.name, s), 0) > 0:
                        near = [d for d in el.near[(p.name, key, s)] if d in placed]
                        best = min(near, key=lambda d: (env.site_rtt(s, d), d))
                        serves.setdefault(p.name, {})[s] = best
        data.append(DataPlacement(name=name, kind=kind, privacy_tier=tier.value, sites=placed, serves=serves))

    sites: list[SitePlan] = []
    total_cost = 0.0
    for site in env.sites:
        here = {pp.name: pp.replicas[site.name] for pp in pipelines if site.name in pp.replicas}
        specs = {p.name: p for p in env.pipelines}
        gpus_used: dict[str, int] = {}
        cores = mem = 0.0
        for name, n in here.items():
            p = specs[name]
            cores += p.resources.cpu * n
            mem += p.resources.memory_gib * n
            if p.gpu:
                gpus_used[p.gpu.type] = gpus_used.get(p.gpu.type, 0) + p.gpu.count * n
        data_here = [d for d in data if site.name in d.sites]
        pieces = cand.data_pieces(env)
        for d in data_here:
            piece = pieces[f"{d.kind}:{d.name}"]
            cores += piece.cpu
            mem += piece.memory_gib
        if isinstance(site, CloudSite):
            site_nodes = {it.name: nodes[(site.name, it.name)] for it in site.instance_types
                          if nodes[(site.name, it.name)] > 0}
            cost = sum(it.hourly_usd * site_nodes.get(it.name, 0) for it in site.instance_types)
            gcap = _cloud_gpu_capacity(site)
            core_cap: float = sum(it.vcpus * n for it, n in ((i, site_nodes.get(i.name, 0)) for i in site.instance_types))
            mem_cap = sum(it.memory_gib * n for it, n in ((i, site_nodes.get(i.name, 0)) for i in site.instance_types))
        else:
            site_nodes = {}
            mc = site.marginal_cost
            cost = sum(shapes.replica_cost(env, specs[name], site) * n for name, n in here.items())
            cost += sum(pieces[f"{d.kind}:{d.name}"].cpu * mc.core_hour_usd +
                        pieces[f"{d.kind}:{d.name}"].memory_gib * mc.memory_gib_hour_usd for d in data_here)
            cap = cand.datacenter_capacity(site).total
            core_cap, mem_cap, gcap = cap[0], cap[1], dict(cap[2])
        total_cost += cost
        sites.append(SitePlan(
            name=site.name, kind=site.kind, pipelines=here, data=[f"{d.kind}:{d.name}" for d in data_here],
            gpus_used=gpus_used, gpus_capacity=gcap, cores_used=round(cores, 3), cores_capacity=round(core_cap, 3),
            memory_gib_used=round(mem, 3), memory_gib_capacity=round(mem_cap, 3), nodes=site_nodes,
            cost_usd_per_hour=round(cost, 4), node_groups=_node_groups(env, site, v, val, here, data_here, nodes)))

    gap = max(0.0, (res.objective - lp_bound) / res.objective) if res.objective > 0 else 0.0
    # The solver's objective adds tie-breaks (latency, idle cloud replicas) worth a few cents to the
    # cost; its bounds are shown net of this plan's tie-breaks, so bound <= cost reads as it should.
    tiebreaks = max(0.0, res.objective - total_cost)
    return PlacementPlan(
        environment=env.name, status=res.status, cost_usd_per_hour=round(total_cost, 4),
        lp_bound_usd_per_hour=round(lp_bound - tiebreaks, 4),
        dual_bound_usd_per_hour=round(res.dual_bound - tiebreaks, 4),
        gap_to_lp=round(gap, 6), solve_seconds=round(elapsed, 3), solver=solver,
        sites=sites, pipelines=pipelines, data=data)


def node_pods(env: Environment, site: CloudSite | Datacenter, replicas: dict[str, int], data: list[str],
              split: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """Shape key -> item -> pods there: replicas (x its pods each) and data pods on the shape they fit, or
    as `split` ((item, shape key) -> replicas or data pods) says where they fit several shapes."""
    pack = shapes.site_packing(env, site)
    out: dict[str, dict[str, int]] = {}
    for item, count in [*replicas.items(), *((d, 1) for d in data)]:
        pods = pack.pods[item][0]
        parts = pack.fits[item]
        if len(parts) == 1:
            out.setdefault(parts[0].shape.key, {})[item] = count * pods
            continue
        for part in parts:
            n = split.get((item, part.shape.key), 0)
            if n:
                out.setdefault(part.shape.key, {})[item] = n * (1 if ":" in item else pods)
    return out


def _node_groups(env: Environment, site: CloudSite | Datacenter, v: _Vars, val: np.ndarray, replicas: dict[str, int],
                 data: list[DataPlacement], nodes: dict[tuple[str, str], int]) -> list[NodeGroup]:
    split = {(item, key): _round(val[i]) for (item, s, key), i in (*v.w.items(), *v.u.items()) if s == site.name}
    on = node_pods(env, site, replicas, [f"{d.kind}:{d.name}" for d in data], split)
    return node_groups(env, site, on, {it: n for (s, it), n in nodes.items() if s == site.name})


def node_groups(env: Environment, site: CloudSite | Datacenter, on: dict[str, dict[str, int]],
                nodes: dict[str, int]) -> list[NodeGroup]:
    """The plan's node groups of a site: every shape with nodes bought or pods placed, in shape order."""
    out = []
    for shape in shapes.site_packing(env, site).shapes:
        pods = dict(sorted(on.get(shape.key, {}).items()))
        count = shape.hosts if shape.hosts is not None else nodes.get(shape.name, 0)
        if not pods and (shape.hosts is not None or count == 0):
            continue
        a = shape.allocatable
        out.append(NodeGroup(shape=shape.key, nodes=count, gpu_type=shape.gpu_type, gpus=a.gpus, cores=round(a.cores, 3),
                             memory_gib=round(a.memory_gib, 3), gpu_pod_cores=round(shape.gpu_cores, 3),
                             gpu_pod_memory_gib=round(shape.gpu_memory_gib, 3), pods=pods))
    return out


def _explain(env: Environment, el: Eligibility, p: Pipeline, reps: dict[str, int], routing: dict[str, dict[str, float]],
             tight_rows: set[CapacityRow]) -> Explanation:
    demand = el.demand[p.name]
    chosen = []
    for s, n in sorted(reps.items()):
        served = [f"{r} {share * 100:.0f}% ({env.user_rtt(r, s):g}+{p.latency.service_ms:g}={env.user_rtt(r, s) + p.latency.service_ms:g} ms"
                  f" <= {p.latency.p99_ms:g})" for r, row in routing.items() for site, share in row.items() if site == s]
        what = f"{s}: {n} replica(s)"
        if p.gpu:
            what += f", {n * p.gpu.count}x{p.gpu.type}"
        what += f", ${shapes.replica_cost(env, p, env.site(s)):.3f}/h each"
        what += "; serves " + ", ".join(served) if served else "; no routed demand (spread/min replicas, failover)"
        chosen.append(what)

    rejected: dict[str, str] = dict(el.rejected[p.name])
    cheapest_chosen = min((shapes.replica_cost(env, p, env.site(s)) for s in reps), default=0.0)
    for s in el.sites[p.name]:
        if s in reps:
            continue
        site = env.site(s)
        routable = [r for r in demand if s in el.routes[(p.name, r)]]
        full = [row for row in tight_rows if row.site == s and row.concerns(env, p)]
        here = shapes.replica_cost(env, p, site)
        if full:
            rejected[s] = "capacity: " + ", ".join(r.label for r in sorted(full)) + " fully used"
        elif demand and not routable:
            rejected[s] = "latency: no demand region within SLO from here (only useful as spread)"
        elif here > cheapest_chosen + 1e-9:
            rejected[s] = f"cost: ${here:.3f}/h per replica vs ${cheapest_chosen:.3f}/h where placed"
        else:
            rejected[s] = "not needed: demand and spread are met by closer or equally cheap sites"

    binding = []
    needed = math.ceil(sum(demand.values()) / (p.capacity_rps * p.target_utilization) - 1e-9) if demand else 0
    total = sum(reps.values())
    if total == p.min_replicas and p.min_replicas > needed:
        binding.append(f"min_replicas={p.min_replicas} (demand alone needs {needed})")
    per_site = cand.per_site_minimum(p)
    for s, n in sorted(reps.items()):
        if n == per_site and per_site > 1:
            binding.append(f"{s}: per-site minimum {per_site} (spread.min_replicas_per_site / variants)")
    if len(reps) == p.spread.min_sites and p.spread.min_sites > 1:
        binding.append(f"spread.min_sites={p.spread.min_sites}")
    for r in sorted(demand):
        within = el.routes[(p.name, r)]
        if len(within) < len(el.sites[p.name]):
            binding.append(f"latency SLO: {r} can be served only from {', '.join(within)} "
                           f"(budget {p.latency.network_budget_ms:g} ms RTT)")
    tier = pipeline_tier(env, p)
    if tier.raised:
        binding.append(f"data flow: runs as {tier.effective.value} (declared {tier.declared.value}): "
                       + "; ".join(f.describe() for f in tier.raised_by))
    binding += [f"data flow: {f.describe()}" for f in tier.flows if f.downgrade_reason is not None]
    if tier.effective.is_sensitive:
        binding.append(f"privacy: {tier.effective.value} only on {', '.join(el.sites[p.name])}")
    for s in sorted(reps):
        for row in sorted(tight_rows):
            if row.site == s and row.concerns(env, p):
                binding.append(f"{s}: {row.label} fully used")
    for dep in p.dependencies:
        lookup = lookup_p99_ms(env, dep)
        binding.append(f"dependency {dep.kind} {dep.target!r} within {dep.latency_budget_ms:g} ms"
                       + (f" = RTT + {lookup:g} ms feature lookup p99 (feature_lookup_p99_ms)" if lookup else ""))

    where = ", ".join(f"{s} ({n})" for s, n in sorted(reps.items()))
    summary = f"{total} replica(s) on {where}"
    return Explanation(summary=summary, chosen=chosen, rejected=dict(sorted(rejected.items())), binding=binding)
