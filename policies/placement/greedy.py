"""The baseline a team would write by hand: on-prem first, then the cheapest cloud, pipeline by pipeline.

Same eligibility and cost model as the solver, so the optimal/greedy ratio
measures only the value of optimising jointly.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.spec import CloudSite, Datacenter, Environment, InstanceType, Pipeline
from policies.placement import candidates as cand
from policies.placement.candidates import data_pieces, dep_key
from policies.placement.eligibility import Eligibility, eligibility
from policies.placement.plan import Baseline


def _gpu_count(it: InstanceType) -> int:
    """GPUs per node of a GPU instance type."""
    assert it.gpu is not None
    return it.gpu.count


@dataclass
class _CloudState:
    site: CloudSite
    nodes: dict[str, int] = field(default_factory=dict)
    free_gpus: dict[str, float] = field(default_factory=dict)   # instance type -> GPUs not yet taken
    pool_cpu: dict[str, float] = field(default_factory=dict)    # GPU type -> allocatable cores left on its nodes
    pool_mem: dict[str, float] = field(default_factory=dict)
    free_cpu: float = 0.0
    free_mem: float = 0.0

    def quota_left(self, family: str) -> float:
        if family not in self.site.vcpu_quotas:
            return math.inf
        quota = self.site.vcpu_quotas[family]
        used = sum(it.vcpus * self.nodes.get(it.name, 0) for it in self.site.instance_types if it.quota_family == family)
        return quota - used

    def _open(self, types: list[InstanceType], need: float, per_node: Callable[[InstanceType], float]) -> dict[str, int] | None:
        """Nodes to open (cheapest per unit first) so that `need` more units fit; None when impossible."""
        plan: dict[str, int] = {}
        left = need
        quota_used: dict[str, int] = {}
        for it in sorted(types, key=lambda i: (i.hourly_usd / per_node(i), i.name)):
            if left <= 1e-9:
                break
            room = math.inf if it.max_nodes is None else it.max_nodes - self.nodes.get(it.name, 0)
            qleft = self.quota_left(it.quota_family) - quota_used.get(it.quota_family, 0)
            room = min(room, qleft // it.vcpus if qleft != math.inf else math.inf)
            take = min(room, math.ceil(left / per_node(it) - 1e-9))
            if take > 0:
                plan[it.name] = int(take)
                quota_used[it.quota_family] = quota_used.get(it.quota_family, 0) + int(take) * it.vcpus
                left -= take * per_node(it)
        return plan if left <= 1e-9 else None

    def _add_gpu_nodes(self, gpu_type: str, opened: dict[str, int]) -> None:
        for name, k in opened.items():
            it = next(i for i in self.site.instance_types if i.name == name)
            assert it.gpu is not None  # opened from GPU instance types only
            self.nodes[name] = self.nodes.get(name, 0) + k
            self.free_gpus[name] = self.free_gpus.get(name, 0.0) + k * it.gpu.count
            self.pool_cpu[gpu_type] = self.pool_cpu.get(gpu_type, 0.0) + k * it.vcpus * cand.CLOUD_ALLOCATABLE
            self.pool_mem[gpu_type] = self.pool_mem.get(gpu_type, 0.0) + k * it.memory_gib * cand.CLOUD_ALLOCATABLE

    def take(self, cpu: float, mem: float, gpu_type: str | None, gpus: float, fits: list[InstanceType] | None = None) -> bool:
        if gpu_type:
            # GPUs only from the instance types the replica's pods fit on (as the solver's rows say)
            types = list(fits or [])
            if not types:
                return False
            need = gpus - sum(self.free_gpus.get(it.name, 0.0) for it in types)
            if need > 1e-9:
                opened = self._open(types, need, _gpu_count)
                if opened is None:
                    return False
                self._add_gpu_nodes(gpu_type, opened)
            while self.pool_cpu.get(gpu_type, 0.0) < cpu - 1e-9 or self.pool_mem.get(gpu_type, 0.0) < mem - 1e-9:
                opened = self._open(types, 1, lambda i: 1)
                if opened is None:
                    return False
                self._add_gpu_nodes(gpu_type, opened)
            left = gpus
            for it in types:
                use = min(left, self.free_gpus.get(it.name, 0.0))
                self.free_gpus[it.name] = self.free_gpus.get(it.name, 0.0) - use
                left -= use
            self.pool_cpu[gpu_type] -= cpu
            self.pool_mem[gpu_type] -= mem
            return True
        types = [it for it in self.site.instance_types if not it.gpu]
        need = max((cpu - self.free_cpu) / cand.CLOUD_ALLOCATABLE, 0.0)
        need_mem = max((mem - self.free_mem) / cand.CLOUD_ALLOCATABLE, 0.0)
        if need > 1e-9 or need_mem > 1e-9:
            opened = self._open(types, max(need, 1e-6), lambda i: i.vcpus)
            if opened is None:
                return False
            for name, k in opened.items():
                it = next(i for i in types if i.name == name)
                self.nodes[name] = self.nodes.get(name, 0) + k
                self.free_cpu += k * it.vcpus * cand.CLOUD_ALLOCATABLE
                self.free_mem += k * it.memory_gib * cand.CLOUD_ALLOCATABLE
            while self.free_mem < mem - 1e-9:
                opened = self._open(types, 1, lambda i: 1)
                if opened is None:
                    return False
                for name, k in opened.items():
                    it = next(i for i in types if i.name == name)
                    self.nodes[name] = self.nodes.get(name, 0) + k
                    self.free_cpu += k * it.vcpus * cand.CLOUD_ALLOCATABLE
                    self.free_mem += k * it.memory_gib * cand.CLOUD_ALLOCATABLE
        self.free_cpu -= cpu
        self.free_mem -= mem
        return True

    def cost(self) -> float:
        return sum(it.hourly_usd * self.nodes.get(it.name, 0) for it in self.site.instance_types)


@dataclass
class _DcState:
    site: Datacenter
    left: dict[int, list[Any]] = field(default_factory=dict)  # zone rank -> [cores, mem, {gpu: n}]
    home: dict[int, int | None] = field(default_factory=dict)  # tier rank -> zone rank (SiteCapacity.home)
    cost: float = 0.0

    def __post_init__(self) -> None:
        capacity = cand.datacenter_capacity(self.site)
        self.home = capacity.home
        for zone, (c, m, g) in capacity.by_zone.items():
            self.left[zone] = [c, m, dict(g)]

    def take(self, level: int, cpu: float, mem: float, gpu_type: str | None, gpus: float, cost: float) -> bool:
        """Take room in the home zone of tier `level`."""
        zone = self.home.get(level)
        if zone is None:
            return False
        room = self.left[zone]
        if room[0] < cpu - 1e-9 or room[1] < mem - 1e-9 or (gpu_type and room[2].get(gpu_type, 0) < gpus - 1e-9):
            return False
        room[0] -= cpu
        room[1] -= mem
        if gpu_type:
            room[2][gpu_type] -= gpus
        self.cost += cost
        return True


@dataclass
class GreedySolution:
    feasible: bool
    cost: float
    unplaced: list[str]
    replicas: dict[tuple[str, str], int]          # (pipeline, site) -> replicas
    routing: dict[tuple[str, str], str]           # (pipeline, region) -> site serving all of it
    nodes: dict[tuple[str, str], int]             # (cloud site, instance type) -> nodes
    data: set[tuple[str, str]]                    # (data key, site)


def greedy_baseline(env: Environment, el: Eligibility | None = None) -> Baseline:
    sol = greedy_solution(env, el)
    if not sol.feasible:
        return Baseline(name="greedy on-prem first", feasible=False, cost_usd_per_hour=None,
                        note=f"could not place {len(sol.unplaced)} pipeline(s), e.g. {', '.join(sol.unplaced[:3])}")
    return Baseline(name="greedy on-prem first", feasible=True, cost_usd_per_hour=round(sol.cost, 4))


def greedy_solution(env: Environment, el: Eligibility | None = None) -> GreedySolution:
    el = el or eligibility(env)
    states = {s.name: (_CloudState(s) if isinstance(s, CloudSite) else _DcState(s)) for s in env.sites}
    pieces = data_pieces(env)
    placed_data: set[tuple[str, str]] = set()
    unplaced: list[str] = []

    def take(p: Pipeline, site_name: str, n: int) -> bool:
        if n <= 0:
            return True
        st = states[site_name]
        gtype = p.gpu.type if p.gpu else None
        gpus = (p.gpu.count if p.gpu else 0) * n
        if isinstance(st, _DcState):
            return st.take(p.privacy_tier.rank, p.resources.cpu * n, p.resources.memory_gib * n, gtype, gpus,
                           cand.replica_cost(p, st.site) * n)
        return st.take(p.resources.cpu * n, p.resources.memory_gib * n, gtype, gpus,
                       cand.fitting_types(p, st.site) if p.gpu else None)

    def order(p: Pipeline, sites: list[str]) -> list[str]:
        return sorted(sites, key=lambda s: (0 if isinstance(env.site(s), Datacenter) else 1,
                                            cand.replica_cost(p, env.site(s)), s))

    def place_data(p: Pipeline, site_name: str) -> bool:
        for dep in p.dependencies:
            key = dep_key(dep)
            near = el.near[(p.name, key, site_name)]
            if any((key, d) in placed_data for d in near):
                continue
            piece = pieces[key]
            for d in sorted(near, key=lambda d: (d != site_name, 0 if isinstance(env.site(d), Datacenter) else 1, d)):
                st = states[d]
                ok = (st.take(piece.tier.rank, piece.cpu, piece.memory_gib, None, 0,
                              piece.cpu * st.site.marginal_cost.core_hour_usd +
                              piece.memory_gib * st.site.marginal_cost.memory_gib_hour_usd)
                      if isinstance(st, _DcState) else st.take(piece.cpu, piece.memory_gib, None, 0))
                if ok:
                    placed_data.add((key, d))
                    break
            else:
                return False
        return True

    all_replicas: dict[tuple[str, str], int] = {}
    routing: dict[tuple[str, str], str] = {}
    pipelines = sorted(env.pipelines, key=lambda p: (-(p.gpu.count if p.gpu else 0) * sum(el.demand[p.name].values()),
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

    cost = sum(st.cost() if isinstance(st, _CloudState) else st.cost for st in states.values())
    nodes = {(name, it): n for name, st in states.items() if isinstance(st, _CloudState) for it, n in st.nodes.items()}
    return GreedySolution(feasible=not unplaced, cost=cost, unplaced=unplaced, replicas=all_replicas,
                          routing=routing, nodes=nodes, data=placed_data)
