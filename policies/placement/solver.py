"""Placement as a mixed-integer program: minimum cost under privacy, latency, capacity and spread.

`solve(env) -> PlacementPlan` reads nothing but its arguments. Variables, per
eligible (pipeline, site[, user region]) only:

  x[p,s]   replicas of p at s (integer)           y[p,s]  p runs at s (binary)
  f[p,r,s] share of region r's demand for p served at s (continuous, only within SLO)
  n[s,i]   cloud nodes of instance type i (integer) z[d,s]  data piece d present at s (binary)

Objective: cloud node-hours at list price + own-datacenter marginal cost of the
replicas and data stores + a negligible latency tie-breaker (closer wins a tie).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeGuard

from infra.errors import InfeasibleReason, PlacementInfeasible
from infra.spec import CloudSite, Datacenter, Environment, Pipeline, PrivacyTier
from policies.placement import candidates as cand
from policies.placement.candidates import data_pieces, dep_key
from policies.placement.eligibility import (
    Eligibility,
    eligibility,
    static_infeasibility,
)
from policies.placement.explain import assemble_plan
from policies.placement.milp import FEASIBLE, INF, Model, Result, solver_version
from policies.placement.plan import PlacementPlan
from policies.placement.rows import CapacityRow, RowKind

if TYPE_CHECKING:
    import numpy as np

LATENCY_TIEBREAK = 1e-7  # $/h per (rps x ms): orders equal-cost choices by RTT, never outweighs a real cost
REPLICA_TIEBREAK = 1e-4  # $/h per cloud replica: no idle replicas on already-paid nodes
DATA_TIEBREAK = 1e-4     # $/h per cloud data store
ELASTIC_PENALTY = 1e6    # $/h per unit of missing capacity when diagnosing infeasibility


@dataclass
class _Vars:
    x: dict[tuple[str, str], int] = field(default_factory=dict)       # (pipeline, site) -> var
    y: dict[tuple[str, str], int] = field(default_factory=dict)       # (pipeline, site) -> var
    f: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (pipeline, region, site) -> var
    n: dict[tuple[str, str], int] = field(default_factory=dict)       # (cloud site, instance type) -> var
    z: dict[tuple[str, str], int] = field(default_factory=dict)       # (data key, site) -> var
    slack: dict[CapacityRow, int] = field(default_factory=dict)  # row -> its slack var (elastic mode)
    capacity_rows: dict[CapacityRow, tuple[int, float]] = field(default_factory=dict)  # -> (row, upper bound)


def build(env: Environment, el: Eligibility, *, elastic: bool = False) -> tuple[Model, _Vars]:
    m, v = Model(), _Vars()
    pieces = data_pieces(env)
    site: CloudSite | Datacenter

    def cap_row(key: CapacityRow, terms: list[tuple[int, float]], ub: float) -> None:
        # Cloud node rows (bound 0) only tie replicas to bought nodes; the limits are quotas and max_nodes.
        if elastic and not key.ties_nodes_only:
            s = m.var(0, INF, ELASTIC_PENALTY)
            v.slack[key] = s
            terms = terms + [(s, -1.0)]
        v.capacity_rows[key] = (m.row(terms, -INF, ub), ub)

    # ---- cloud nodes
    for site in env.cloud_sites:
        for it in site.instance_types:
            ub = INF if it.max_nodes is None else it.max_nodes
            if elastic and it.max_nodes is not None:
                v.n[(site.name, it.name)] = m.var(0, INF, it.hourly_usd, integer=True)
                cap_row(CapacityRow(RowKind.MAX_NODES, site.name, instance_type=it.name), [(v.n[(site.name, it.name)], 1.0)], it.max_nodes)
            else:
                v.n[(site.name, it.name)] = m.var(0, ub, it.hourly_usd, integer=True)

    # ---- pipelines
    for p in env.pipelines:
        demand = el.demand[p.name]
        per_site = cand.per_site_minimum(p)
        upper = cand.replicas_upper_bound(p, demand, per_site)
        # Presence binaries only where something depends on presence: fewer binaries, faster solves.
        needs_presence = per_site > 1 or p.spread.min_sites > 1 or bool(p.dependencies)
        for s in el.sites[p.name]:
            site = env.site(s)
            cost = cand.replica_cost(p, site) if isinstance(site, Datacenter) else REPLICA_TIEBREAK
            v.x[(p.name, s)] = m.var(0, upper, cost, integer=True)
            if needs_presence:
                v.y[(p.name, s)] = m.var(0, 1, 0.0, integer=True)
                m.row([(v.x[(p.name, s)], 1.0), (v.y[(p.name, s)], -upper)], -INF, 0)
                m.row([(v.x[(p.name, s)], 1.0), (v.y[(p.name, s)], -per_site)], 0, INF)
        for r, rps in demand.items():
            terms = []
            for s in el.routes[(p.name, r)]:
                tie = LATENCY_TIEBREAK * rps * env.user_rtt(r, s)
                v.f[(p.name, r, s)] = m.var(0, 1, tie)
                terms.append((v.f[(p.name, r, s)], 1.0))
            m.row(terms, 1, 1)
        useful = p.capacity_rps * p.target_utilization
        for s in el.sites[p.name]:
            terms = [(v.x[(p.name, s)], useful)]
            terms += [(v.f[(p.name, r, s)], -rps) for r, rps in demand.items() if (p.name, r, s) in v.f]
            m.row(terms, 0, INF)
        # Valid cuts: replicas are whole, so the sites able to serve a region hold at least
        # ceil(its demand / per-replica capacity). They bring the LP bound close to the optimum.
        total_need = math.ceil(sum(demand.values()) / useful - 1e-9) if demand else 0
        m.row([(v.x[(p.name, s)], 1.0) for s in el.sites[p.name]], max(p.min_replicas, total_need), INF)
        for r, rps in demand.items():
            m.row([(v.x[(p.name, s)], 1.0) for s in el.routes[(p.name, r)]], math.ceil(rps / useful - 1e-9), INF)
        if needs_presence:
            m.row([(v.y[(p.name, s)], 1.0) for s in el.sites[p.name]], p.spread.min_sites, INF)

    # ---- data pieces, only where some pipeline reads them
    readers: dict[str, list[Pipeline]] = {}
    for p in env.pipelines:
        for dep in p.dependencies:
            readers.setdefault(dep_key(dep), []).append(p)
    for key in sorted(readers):
        piece = pieces[key]
        for s in el.data_sites[key]:
            site = env.site(s)
            if isinstance(site, Datacenter):
                mc = site.marginal_cost
                cost = piece.cpu * mc.core_hour_usd + piece.memory_gib * mc.memory_gib_hour_usd
            else:
                cost = DATA_TIEBREAK
            v.z[(key, s)] = m.var(0, 1, cost, integer=True)
    for p in env.pipelines:
        for dep in p.dependencies:
            key = dep_key(dep)
            for s in el.sites[p.name]:
                near = el.near[(p.name, key, s)]
                m.row([(v.y[(p.name, s)], 1.0)] + [(v.z[(key, d)], -1.0) for d in near], -INF, 0)

    # ---- capacity
    for site in env.sites:
        here = [p for p in env.pipelines if (p.name, site.name) in v.x]
        data_here = [pieces[k] for k in sorted(readers) if (k, site.name) in v.z]
        if isinstance(site, CloudSite):
            for gtype in sorted(site.gpu_types):
                users = [p for p in here if p.gpu and p.gpu.type == gtype]
                if not users:
                    continue
                pool = [it for it in site.instance_types if it.gpu and it.gpu.type == gtype]
                fits = {p.name: frozenset(it.name for it in cand.fitting_types(p, site)) for p in users}
                # GPUs: every set of pipelines needs at least its GPUs on the types that fit its pods
                # (Hall's condition over each pipeline's fitting set; exact when the sets nest, as
                # bigger nodes fit everything smaller ones fit).
                for fset in sorted({*fits.values(), frozenset(it.name for it in pool)}, key=lambda f: (len(f), sorted(f))):
                    terms = [(v.x[(p.name, site.name)], float(p.gpu.count)) for p in users
                             if p.gpu is not None and fits[p.name] <= fset]
                    if not terms:
                        continue
                    terms += [(v.n[(site.name, it.name)], -float(it.gpu.count)) for it in pool
                              if it.gpu is not None and it.name in fset]
                    full = len(fset) == len(pool)
                    cap_row(CapacityRow(RowKind.GPU, site.name, gpu_type=gtype,
                                        instance_types=() if full else tuple(sorted(fset))), terms, 0)
                # ... and the replicas' CPU and memory fit the allocatable part of those GPU nodes
                for dim in ("cpu", "memory"):
                    terms = [(v.x[(p.name, site.name)], p.resources.cpu if dim == "cpu" else p.resources.memory_gib)
                             for p in users]
                    terms += [(v.n[(site.name, it.name)],
                               -cand.CLOUD_ALLOCATABLE * (it.vcpus if dim == "cpu" else it.memory_gib)) for it in pool]
                    cap_row(CapacityRow(RowKind(dim), site.name, gpu_type=gtype), terms, 0)
            cpu_users = [p for p in here if not p.gpu]
            if cpu_users or data_here:
                cpu_nodes = [it for it in site.instance_types if not it.gpu]
                for dim in ("cpu", "memory"):
                    terms = [(v.x[(p.name, site.name)], p.resources.cpu if dim == "cpu" else p.resources.memory_gib)
                             for p in cpu_users]
                    terms += [(v.z[(d.key, site.name)], d.cpu if dim == "cpu" else d.memory_gib) for d in data_here]
                    terms += [(v.n[(site.name, it.name)],
                               -cand.CLOUD_ALLOCATABLE * (it.vcpus if dim == "cpu" else it.memory_gib)) for it in cpu_nodes]
                    cap_row(CapacityRow(RowKind(dim), site.name, cpu_nodes=True), terms, 0)
            for family, quota in sorted(site.vcpu_quotas.items()):
                terms = [(v.n[(site.name, it.name)], float(it.vcpus)) for it in site.instance_types
                         if it.quota_family == family]
                if terms:
                    cap_row(CapacityRow(RowKind.QUOTA, site.name, family=family), terms, float(quota))
        else:
            capacity = cand.datacenter_capacity(site)
            for zone, (cores, mem, gpus) in sorted(capacity.by_zone.items()):
                users = [p for p in here if capacity.home[p.privacy_tier.rank] == zone]
                data_l = [d for d in data_here if capacity.home[d.tier.rank] == zone]
                if not users and not data_l:
                    continue
                tier = PrivacyTier(list(PrivacyTier)[zone])
                cap_row(CapacityRow(RowKind.CPU, site.name, zone=tier),
                        [(v.x[(p.name, site.name)], p.resources.cpu) for p in users] +
                        [(v.z[(d.key, site.name)], d.cpu) for d in data_l], cores)
                cap_row(CapacityRow(RowKind.MEMORY, site.name, zone=tier),
                        [(v.x[(p.name, site.name)], p.resources.memory_gib) for p in users] +
                        [(v.z[(d.key, site.name)], d.memory_gib) for d in data_l], mem)
                for gtype in sorted({p.gpu.type for p in users if p.gpu}):
                    cap_row(CapacityRow(RowKind.GPU, site.name, gpu_type=gtype, zone=tier),
                            [(v.x[(p.name, site.name)], float(p.gpu.count)) for p in users if p.gpu and p.gpu.type == gtype],
                            float(gpus.get(gtype, 0)))
    return m, v


def _start_from_greedy(env: Environment, el: Eligibility, m: Model, v: _Vars) -> np.ndarray | None:
    import numpy as np

    from policies.placement.greedy import greedy_solution

    sol = greedy_solution(env, el)
    if not sol.feasible:
        return None
    val = np.zeros(m.num_vars)
    for key, i in v.x.items():
        val[i] = sol.replicas.get(key, 0)
    for key, i in v.y.items():
        val[i] = 1.0 if sol.replicas.get(key, 0) > 0 else 0.0
    for (p, r, s), i in v.f.items():
        val[i] = 1.0 if sol.routing.get((p, r)) == s else 0.0
    for key, i in v.n.items():
        val[i] = sol.nodes.get(key, 0)
    for key, i in v.z.items():
        val[i] = 1.0 if key in sol.data else 0.0
    return val if m.violations(val) == 0 else None


def _capacity_diagnosis(env: Environment, el: Eligibility, time_limit: float) -> list[InfeasibleReason]:
    m, v = build(env, el, elastic=True)
    res = m.solve(relax=False, time_limit=time_limit, mip_gap=1e-2)
    if res.status not in ("optimal", "time_limit"):
        res = m.solve(relax=True, time_limit=time_limit)
    reasons = []
    for key, idx in sorted(v.slack.items()):
        short = res.values[idx]
        if short <= 1e-6:
            continue
        wanting = sorted(p for (p, s) in v.x if s == key.site and res.values[v.x[(p, s)]] > 0.5
                         and key.concerns(env, env.pipeline(p)))
        reasons.append(InfeasibleReason(
            ", ".join(wanting[:5]) + (f" (+{len(wanting) - 5} more)" if len(wanting) > 5 else "") or None,
            "capacity", f"{key.site}: {key.shortage_label} short by {math.ceil(short - 1e-6)} {key.unit}",
            "add capacity or quota at this site, allow more sites for these pipelines, or lower their demand"))
    if not reasons:
        reasons.append(InfeasibleReason(None, "unknown", "the solver found no feasible placement within the time limit",
                                        "raise the time limit (--time-limit)"))
    return reasons


DEFAULT_MIP_GAP = 0.005  # stop within 0.5 % of the proven lower bound (`hybridml plan` and the program alike)


class _Clock:
    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def left(self, share: float = 1.0) -> float:
        return max(0.05, (self.deadline - time.perf_counter()) * share)


def _search(env: Environment, el: Eligibility, m: Model, v: _Vars, *, time_limit: float,
            mip_gap: float) -> tuple[Result | None, float, str]:
    """Find a placement within `mip_gap` of a proven lower bound; returns it (None when the
    model is infeasible), the LP-relaxation bound and which steps settled it.

    Measured on the prod fleet, HiGHS spends most of a plain solve in its root cut loop before
    its own heuristics find the optimum. Three cheaper steps usually settle it first:
      1. the LP relaxation: the lower bound, and which sites each pipeline may use at all;
      2. a dive: the whole MIP restricted to the replicas and presences the LP uses, stopped at
         the first placement within the gap of the bound (at 10x the LP bound is already tight);
      3. a better bound: relax everything but the whole cloud nodes, the integrality that
         carries most of the gap between LP and optimum.
    Only when those do not meet the gap does the full MIP run, from the best point found.
    """
    import numpy as np

    clock = _Clock(time_limit)
    lp = m.solve(relax=True, time_limit=clock.left())
    if lp.status not in FEASIBLE:
        return None, math.nan, "LP infeasible"
    bound = lp.objective

    def within(res: Result | None) -> TypeGuard[Result]:
        return res is not None and res.objective <= bound + mip_gap * abs(res.objective) + 1e-9

    def proven(res: Result) -> Result:
        gap = max(0.0, (res.objective - bound) / abs(res.objective)) if res.objective else 0.0
        return Result("optimal" if gap <= mip_gap + 1e-12 else res.status, res.objective, bound, gap,
                      res.values, res.row_values)

    upper = np.asarray(m.ub, dtype=float).copy()
    unused = [i for d in (v.x, v.y) for i in d.values() if lp.values[i] <= 1e-6]
    upper[unused] = 0.0
    dive = m.solve(upper=upper, time_limit=clock.left(0.6), mip_gap=mip_gap, target=bound * (1 + mip_gap))
    best = dive if dive.status in FEASIBLE else None
    if within(best):
        return proven(best), lp.objective, "LP-guided dive, LP bound"

    node_counts = set(v.n.values())
    whole_nodes = m.solve(integer=[flag and i in node_counts for i, flag in enumerate(m.integer)],
                          time_limit=clock.left(0.3), mip_gap=mip_gap / 10)
    if whole_nodes.status in FEASIBLE or whole_nodes.status == "infeasible_or_timeout":
        bound = max(bound, whole_nodes.dual_bound)
    if within(best):
        return proven(best), lp.objective, "LP-guided dive, whole-node bound"

    start = best.values if best is not None else _start_from_greedy(env, el, m, v)
    full = m.solve(time_limit=clock.left(), mip_gap=mip_gap, start=start)
    if full.status not in FEASIBLE:
        return (proven(best) if best is not None else None), lp.objective, "LP-guided dive, full MIP failed"
    bound = max(bound, full.dual_bound)
    if best is not None and best.objective < full.objective:
        full = best
    return proven(full), lp.objective, "full MIP" + (" from the dive" if best is not None else " from the greedy start")


def solve(env: Environment, *, time_limit: float = 60.0, mip_gap: float = DEFAULT_MIP_GAP) -> PlacementPlan:
    """Place every pipeline. Raises PlacementInfeasible with reasons when no placement exists."""
    started = time.perf_counter()
    el = eligibility(env)
    reasons = static_infeasibility(env, el)
    if reasons:
        raise PlacementInfeasible(reasons)
    m, v = build(env, el)
    res, lp_bound, how = _search(env, el, m, v, time_limit=time_limit, mip_gap=mip_gap)
    if res is None:
        raise PlacementInfeasible(_capacity_diagnosis(env, el, time_limit))
    elapsed = time.perf_counter() - started
    return assemble_plan(env, el, v, res, lp_bound=lp_bound, elapsed=elapsed, solver=f"{solver_version()} ({how})")
