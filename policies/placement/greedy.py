"""The baseline a team would write by hand: on-prem first, then the cheapest cloud, pipeline by pipeline.

Same eligibility, cost model and per-node packing (slot units per node shape, `shapes`) as the solver,
so the optimal/greedy ratio measures only the value of optimising jointly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from infra.spec import CloudSite, Datacenter, Environment, Pipeline
from policies.placement import candidates as cand
from policies.placement import shapes
from policies.placement.candidates import data_pieces, dep_key
from policies.placement.eligibility import Eligibility, eligibility
from policies.placement.plan import Baseline
from policies.placement.shapes import SitePacking


@dataclass
class _SiteState:
    """What one site has left, in the solver's own terms: free slot units per node shape part, cloud nodes bought."""

    env: Environment
    site: CloudSite | Datacenter
    pack: SitePacking
    nodes: dict[str, int] = field(default_factory=dict)          # cloud: instance type -> nodes bought
    free: dict[tuple[str, bool], int] = field(default_factory=dict)   # (shape key, GPU part) -> free units
    on: dict[tuple[str, str], int] = field(default_factory=dict)  # (item, shape key) -> replicas / data pods
    marginal: float = 0.0                                         # datacenter: marginal $/h taken

    def __post_init__(self) -> None:
        for part in self.pack.parts:
            hosts = part.shape.hosts or 0
            self.free[(part.shape.key, part.gpu)] = part.capacity * hosts

    def _quota_left(self, family: str, nodes: dict[str, int]) -> float:
        assert isinstance(self.site, CloudSite)
        if family not in self.site.vcpu_quotas:
            return math.inf
        used = sum(it.vcpus * nodes.get(it.name, 0) for it in self.site.instance_types if it.quota_family == family)
        return self.site.vcpu_quotas[family] - used

    def take(self, item: str, count: int, cost: float = 0.0) -> bool:
        """Place `count` whole replicas (pipelines; all pods of one replica on one shape) or data pods:
        into free room first, then (cloud) on new nodes of the cheapest shape that fits. All or nothing."""
        if count <= 0:
            return True
        parts = self.pack.fits.get(item, [])
        if not parts:
            return False
        group = 1 if ":" in item else self.pack.pods[item][0]    # pods placed together
        free, nodes, on, left = dict(self.free), dict(self.nodes), dict(self.on), count
        for part in parts:
            k = (part.shape.key, part.gpu)
            per = group * part.units[item]
            n = min(left, free[k] // per)
            if n:
                free[k] -= n * per
                on[(item, part.shape.key)] = on.get((item, part.shape.key), 0) + n
                left -= n
        if left and isinstance(self.site, CloudSite):
            for part in parts:    # cheapest room per pod first
                it = part.shape.instance
                assert it is not None  # cloud parts
                k = (part.shape.key, part.gpu)
                per = group * part.units[item]
                want = math.ceil((left * per - free[k]) / part.capacity)
                room = math.inf if it.max_nodes is None else it.max_nodes - nodes.get(it.name, 0)
                quota = self._quota_left(it.quota_family, nodes)
                extra = int(min(want, room, quota // it.vcpus if quota != math.inf else math.inf))
                if extra <= 0:
                    continue
                nodes[it.name] = nodes.get(it.name, 0) + extra
                free[k] += extra * part.capacity
                n = min(left, free[k] // per)
                free[k] -= n * per
                on[(item, part.shape.key)] = on.get((item, part.shape.key), 0) + n
                left -= n
                if not left:
                    break
        if left:
            return False
        self.free, self.nodes, self.on = free, nodes, on
        self.marginal += cost
        return True

    def cost(self) -> float:
        if isinstance(self.site, CloudSite):
            return sum(it.hourly_usd * self.nodes.get(it.name, 0) for it in self.site.instance_types)
        return self.marginal


@dataclass
class GreedySolution:
    feasible: bool
    cost: float
    unplaced: list[str]
    replicas: dict[tuple[str, str], int]          # (pipeline, site) -> replicas
    routing: dict[tuple[str, str], str]           # (pipeline, region) -> site serving all of it
    nodes: dict[tuple[str, str], int]             # (cloud site, instance type) -> nodes
    data: set[tuple[str, str]]                    # (data key, site)
    shapes: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (item, site, shape key) -> replicas / pods


def greedy_baseline(env: Environment, el: Eligibility | None = None) -> Baseline:
    sol = greedy_solution(env, el)
    if not sol.feasible:
        return Baseline(name="greedy on-prem first", feasible=False, cost_usd_per_hour=None,
                        note=f"could not place {len(sol.unplaced)} pipeline(s), e.g. {', '.join(sol.unplaced[:3])}")
    return Baseline(name="greedy on-prem first", feasible=True, cost_usd_per_hour=round(sol.cost, 4))


def greedy_solution(env: Environment, el: Eligibility | None = None, first: frozenset[str] = frozenset(),
                    passes: int = 4) -> GreedySolution:
    """Pipeline by pipeline, biggest GPU demand first (`first`: these before all others). When some do not
    fit (e.g. their data store finds its zone full), another pass places those first too (a few passes)."""
    el = el or eligibility(env)
    states = {s.name: _SiteState(env, s, shapes.site_packing(env, s)) for s in env.sites}
    pieces = data_pieces(env)
    placed_data: set[tuple[str, str]] = set()
    unplaced: list[str] = []

    def take(p: Pipeline, site_name: str, n: int) -> bool:
        if n <= 0:
            return True
        st = states[site_name]
        return st.take(p.name, n, shapes.replica_cost(env, p, st.site) * n if isinstance(st.site, Datacenter) else 0.0)

    def order(p: Pipeline, sites: list[str]) -> list[str]:
        return sorted(sites, key=lambda s: (0 if isinstance(env.site(s), Datacenter) else 1,
                                            shapes.replica_cost(env, p, env.site(s)), s))

    def place_data(p: Pipeline, site_name: str) -> bool:
        for dep in p.dependencies:
            key = dep_key(dep)
            near = el.near[(p.name, key, site_name)]
            if any((key, d) in placed_data for d in near):
                continue
            piece = pieces[key]
            for d in sorted(near, key=lambda d: (d != site_name, 0 if isinstance(env.site(d), Datacenter) else 1, d)):
                st = states[d]
                cost = (piece.cpu * st.site.marginal_cost.core_hour_usd + piece.memory_gib * st.site.marginal_cost.memory_gib_hour_usd
                        if isinstance(st.site, Datacenter) else 0.0)
                if st.take(key, piece.pods, cost):
                    placed_data.add((key, d))
                    break
            else:
                return False
        return True

    all_replicas: dict[tuple[str, str], int] = {}
    routing: dict[tuple[str, str], str] = {}
    pipelines = sorted(env.pipelines, key=lambda p: (p.name not in first, -(p.gpu.count if p.gpu else 0) * sum(el.demand[p.name].values()),
                                                     -sum(el.demand[p.name].values()), p.name))
    for p in pipelines:
        useful = p.capacity_rps * p.target_utilization
        per_site = cand.per_site_minimum(p)
        assigned: dict[str, float] = {}
        replicas: dict[str, int] = {}
        ok = True
        for region, rps in sorted(el.demand[p.name].items(), key=lambda kv: (-kv[1], kv[0])):
            for s in order(p, el.routes[(p.name, region)]):
                new = max(math.ceil((assigned.get(s, 0.0) + rps) / useful - 1e-9), per_site)
                if take(p, s, new - replicas.get(s, 0)):
                    assigned[s] = assigned.get(s, 0.0) + rps
                    replicas[s] = new
                    routing[(p.name, region)] = s
                    break
            else:
                ok = False
        extra_sites = order(p, [s for s in el.sites[p.name] if s not in replicas])
        while ok and (sum(replicas.values()) < p.min_replicas or len(replicas) < p.spread.min_sites):
            if len(replicas) < p.spread.min_sites or not replicas:
                for s in list(extra_sites):
                    extra_sites.remove(s)
                    if take(p, s, per_site):
                        replicas[s] = per_site
                        break
                else:
                    ok = False
            else:
                s = order(p, list(replicas))[0]
                if take(p, s, 1):
                    replicas[s] += 1
                else:
                    ok = False
        if ok:
            ok = all(place_data(p, s) for s in replicas)
        if not ok:
            unplaced.append(p.name)
        for s, n in replicas.items():
            all_replicas[(p.name, s)] = n

    if unplaced and passes > 1 and not set(unplaced) <= first:
        return greedy_solution(env, el, frozenset(first | set(unplaced)), passes - 1)
    cost = sum(st.cost() for st in states.values())
    nodes = {(name, it): n for name, st in states.items() for it, n in st.nodes.items()}
    on = {(item, name, shape): n for name, st in states.items() for (item, shape), n in st.on.items() if n}
    return GreedySolution(feasible=not unplaced, cost=cost, unplaced=unplaced, replicas=all_replicas,
                          routing=routing, nodes=nodes, data=placed_data, shapes=on)
