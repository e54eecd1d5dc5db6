"""Placement as a mixed-integer program: minimum cost under privacy, latency, capacity and spread.

`solve(env) -> PlacementPlan` reads nothing but its arguments. Variables, per
eligible (pipeline, site[, user region]) only:

  x[p,s]   replicas of p at s (integer)           y[p,s]  p runs at s (binary)
  f[p,r,s] share of region r's demand for p served at s (continuous, only within SLO)
  n[s,i]   cloud nodes of instance type i (integer) z[d,s]  data piece d present at s (binary)
  w[p,s,t] replicas of p on node shape t of s, u[d,s,t] pods of data piece d on t (integer; only where
           the pods fit more than one shape, else x / z count on their one shape)

Capacity is per node shape (`shapes`): sum over its pods of their slot units <= units per node x nodes
(cloud: the nodes bought; datacenter: the hosts of that shape in the zone), so whole pods fit whole nodes.

Objective: cloud node-hours at list price + own-datacenter marginal cost of the
replicas and data stores + a negligible latency tie-breaker (closer wins a tie).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeGuard

from infra.dataflow import effective_tier
from infra.errors import InfeasibleReason, PlacementInfeasible
from infra.spec import CloudSite, Datacenter, Environment, Pipeline, PrivacyTier
from policies.placement import candidates as cand
from policies.placement import shapes
from policies.placement.candidates import data_pieces, dep_key
from policies.placement.eligibility import (
    Eligibility,
    eligibility,
    static_infeasibility,
)
from policies.placement.explain import assemble_plan
from policies.placement.milp import FEASIBLE, INF, Model, Result, solver_version
from policies.placement.packing import packing_problems
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
    w: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (pipeline, site, shape key) -> var
    u: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (data key, site, shape key) -> var
    slack: dict[CapacityRow, int] = field(default_factory=dict)  # row -> its slack var (elastic mode)
    capacity_rows: dict[CapacityRow, tuple[int, float]] = field(default_factory=dict)  # -> (row, upper bound)


def build(env: Environment, el: Eligibility, *, elastic: bool = False) -> tuple[Model, _Vars]:
    m, v = Model(), _Vars()
    pieces = data_pieces(env)
    site: CloudSite | Datacenter

    def cap_row(key: CapacityRow, terms: list[tuple[int, float]], ub: float, per_unit: float = 1.0) -> None:
        # Cloud node rows (bound 0) only tie replicas to bought nodes; the limits are quotas and max_nodes.
        # `per_unit`: the row's coefficient of one unit of the slack (slot rows count nodes in slot units).
        if elastic and not key.ties_nodes_only:
            s = m.var(0, INF, ELASTIC_PENALTY)
            v.slack[key] = s
            terms = terms + [(s, -per_unit)]
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
            cost = shapes.replica_cost(env, p, site) if isinstance(site, Datacenter) else REPLICA_TIEBREAK
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

    # ---- whole pods on whole nodes: which shape each replica / data pod goes to, where there is a choice
    packs = {site.name: shapes.site_packing(env, site) for site in env.sites}
    for (name, s), xi in v.x.items():
        parts = packs[s].fits[name]
        if len(parts) > 1:
            ub = m.ub[xi]
            split = [(m.var(0, ub, 0.0, integer=True), part.shape.key) for part in parts]
            for var, key in split:
                v.w[(name, s, key)] = var
            m.row([(xi, -1.0)] + [(var, 1.0) for var, _ in split], 0, 0)
    for (key, s), zi in v.z.items():
        parts = packs[s].fits[key]
        if len(parts) > 1:
            pods = packs[s].pods[key][0]
            split = [(m.var(0, pods, 0.0, integer=True), part.shape.key) for part in parts]
            for var, shape in split:
                v.u[(key, s, shape)] = var
            m.row([(zi, -float(pods))] + [(var, 1.0) for var, _ in split], 0, 0)

    # ---- capacity: slots per node shape (and part), quotas, datacenter zones
    for site in env.sites:
        pack = packs[site.name]
        for part in pack.parts:
            key = part.shape.key
            terms = []
            for name, units in part.units.items():
                pods = pack.pods[name][0]
                if ":" in name:    # a data piece: its pods
                    if (name, site.name, key) in v.u:
                        terms.append((v.u[(name, site.name, key)], float(units)))
                    elif (name, site.name) in v.z:
                        terms.append((v.z[(name, site.name)], float(units * pods)))
                elif (name, site.name, key) in v.w:
                    terms.append((v.w[(name, site.name, key)], float(units * pods)))
                elif (name, site.name) in v.x:
                    terms.append((v.x[(name, site.name)], float(units * pods)))
            if not terms:
                continue
            gpu_type = part.shape.gpu_type if part.gpu else None
            if isinstance(site, CloudSite):
                terms.append((v.n[(site.name, part.shape.name)], -float(part.capacity)))
                cap_row(CapacityRow(RowKind.SLOTS, site.name, gpu_type=gpu_type, cpu_nodes=not part.gpu,
                                    instance_type=part.shape.name), terms, 0)
            else:
                assert part.shape.hosts is not None  # datacenter shapes count their hosts
                cap_row(CapacityRow(RowKind.SLOTS, site.name, gpu_type=gpu_type, cpu_nodes=not part.gpu,
                                    zone=part.shape.zone, host_shape=part.shape.name), terms,
                        float(part.capacity * part.shape.hosts), float(part.capacity))
        if isinstance(site, CloudSite):
            for family, quota in sorted(site.vcpu_quotas.items()):
                terms = [(v.n[(site.name, it.name)], float(it.vcpus)) for it in site.instance_types
                         if it.quota_family == family]
                if terms:
                    cap_row(CapacityRow(RowKind.QUOTA, site.name, family=family), terms, float(quota))
            continue
        # datacenter zones as a whole (implied by the slot rows; they name the resource that runs out)
        here = [p for p in env.pipelines if (p.name, site.name) in v.x]
        data_here = [pieces[k] for k in sorted(readers) if (k, site.name) in v.z]
        capacity = cand.datacenter_capacity(site)
        for zone, (cores, mem, gpus) in sorted(capacity.by_zone.items()):
            users = [p for p in here if capacity.home[effective_tier(env, p).rank] == zone]
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
    for key3, i in (*v.w.items(), *v.u.items()):
        val[i] = sol.shapes.get(key3, 0)
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


def _whole_pods(m: Model, v: _Vars, dive: Result, upper: np.ndarray, time_limit: float) -> Result | None:
    """The dive's replicas and data pieces, each replica and data pod on one node shape (None: they do not split)."""
    import numpy as np

    lower = np.asarray(m.lb, dtype=float).copy()
    upper = upper.copy()
    fixed = [i for d in (v.x, v.y, v.z) for i in d.values()]
    lower[fixed] = upper[fixed] = np.round(dive.values[fixed])
    res = m.solve(lower=lower, upper=upper, time_limit=time_limit, mip_gap=1e-4)
    return res if res.status in FEASIBLE else None


def _rens_box(env: Environment, m: Model, v: _Vars, lp: Result, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the box around the LP point: presences and data pieces rounded down or up; replicas at a cloud
    site at least the LP's rounded down, at a datacenter (full, where the LP uses it: the LP packs it to the last
    slot) at most the LP's rounded up; a site the LP uses at least at its per-site minimum; cloud nodes at least
    the LP's rounded down."""
    import numpy as np

    lower = np.asarray(m.lb, dtype=float).copy()
    box = upper.copy()
    counts = [i for d in (v.y, v.z) for i in d.values()]
    lower[counts] = np.floor(lp.values[counts] + 1e-6)
    box[counts] = np.minimum(box[counts], np.ceil(lp.values[counts] - 1e-6))
    least = {p.name: cand.per_site_minimum(p) for p in env.pipelines}
    cloud = {site.name for site in env.cloud_sites}
    for (name, s), i in v.x.items():
        value = lp.values[i]
        if s in cloud:
            lower[i] = math.floor(value + 1e-6)
        else:
            box[i] = min(box[i], math.ceil(value - 1e-6))
        if value > 1e-6:
            box[i] = max(box[i], min(upper[i], least[name]))
    nodes = list(v.n.values())
    lower[nodes] = np.floor(lp.values[nodes] + 1e-6)
    return lower, box


def _search(env: Environment, el: Eligibility, m: Model, v: _Vars, *, time_limit: float,
            mip_gap: float) -> tuple[Result | None, float, str]:
    """Find a placement within `mip_gap` of a proven lower bound; returns it (None when the
    model is infeasible), the LP-relaxation bound and which steps settled it.

    Measured on the prod fleet, HiGHS spends most of a plain solve in its root cut loop before
    its own heuristics find the optimum. Three cheaper steps usually settle it first:
      1. the LP relaxation: the lower bound, and which sites each pipeline may use at all;
      2. a dive with the split over node shapes continuous, stopped at the first placement within the
         gap of the bound: inside a box around the LP point (RENS), else over the replicas and
         presences the LP uses (at 10x the LP bound is already tight); then whole pods (`_whole_pods`);
      3. a better bound: relax everything but the whole cloud nodes, the integrality that
         carries most of the gap between LP and optimum (first stopped where it proves the gap).
    Only when those do not meet the gap does the full MIP run, from the best point found.
    """
    import numpy as np

    clock = _Clock(time_limit)
    lp_started = time.perf_counter()
    lp = m.solve(relax=True, time_limit=clock.left())
    lp_seconds = time.perf_counter() - lp_started
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
    unused = [i for d in (v.x, v.y, v.w, v.u) for i in d.values() if lp.values[i] <= 1e-6]
    upper[unused] = 0.0
    # The dives decide replicas, data and nodes with the split of replicas over node shapes continuous
    # (the split integers cost HiGHS more than all the rest); then whole pods: the split made integer with
    # replicas and data fixed, the node counts free (a small MIP, mostly fixed by presolve).
    splits = {*v.w.values(), *v.u.values()}
    integer = [flag and i not in splits for i, flag in enumerate(m.integer)]
    target = bound * (1 + mip_gap)
    # First inside a box around the LP point (RENS, `_rens_box`): small, so HiGHS spends far less in its root
    # cut loop (prod x10: 5 s instead of 13 s); where rounding needs more room (prod: quotas the LP fills to the
    # last vCPU) it fails at once. Then the dive over every site the LP uses.
    lower, box = _rens_box(env, m, v, lp, upper)
    how = "RENS dive"
    dive = m.solve(lower=lower, upper=box, integer=integer, time_limit=clock.left(0.25), mip_gap=mip_gap, target=target)
    if dive.status not in FEASIBLE:
        how = "LP-guided dive"
        dive = m.solve(upper=upper, integer=integer, time_limit=clock.left(0.6), mip_gap=mip_gap, target=target)
    best = dive if dive.status in FEASIBLE else None
    if best is not None and splits:
        best = _whole_pods(m, v, best, upper, clock.left(0.3))
    if within(best):
        return proven(best), lp.objective, f"{how}, LP bound"

    whole = [flag and i in set(v.n.values()) for i, flag in enumerate(m.integer)]
    cutoff = best.objective * (1 - 0.95 * mip_gap) if best is not None else math.inf   # a margin for the tie-breaks
    if best is not None and cutoff <= bound + (best.objective - bound) / 3:
        # The bound only has to reach the placement's cost less the gap, and HiGHS stops there: at its root
        # when its cuts get that far (prod at 1 %: 0.3 s), which they do when that point lies low between the LP
        # bound and the cost. Where they fall short, that proof turns into a long search: a short leash, then
        # the plain bound below.
        quick = m.solve(integer=whole, time_limit=min(clock.left(0.3), max(0.5, 5 * lp_seconds)), mip_gap=mip_gap / 10,
                        cutoff=cutoff)
        if quick.status in (*FEASIBLE, "infeasible", "infeasible_or_timeout"):
            bound = max(bound, quick.dual_bound)
    if not within(best):
        whole_nodes = m.solve(integer=whole, time_limit=clock.left(0.3), mip_gap=mip_gap / 10,
                              start=best.values if best is not None else None)
        if whole_nodes.status in (*FEASIBLE, "infeasible_or_timeout"):
            bound = max(bound, whole_nodes.dual_bound)
    if within(best):
        return proven(best), lp.objective, f"{how}, whole-node bound"

    start = best.values if best is not None else _start_from_greedy(env, el, m, v)
    full = m.solve(time_limit=clock.left(), mip_gap=mip_gap, start=start)
    if full.status not in FEASIBLE:
        return (proven(best) if best is not None else None), lp.objective, f"{how}, full MIP failed"
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
    plan = assemble_plan(env, el, v, res, lp_bound=lp_bound, elapsed=elapsed, solver=f"{solver_version()} ({how})")
    problems = packing_problems(env, plan)
    if problems:  # the slot rows guarantee first-fit decreasing packs every plan: this is a bug, not a spec problem
        raise RuntimeError("placement plan does not pack into its nodes: " + "; ".join(problems[:5]))
    return plan
