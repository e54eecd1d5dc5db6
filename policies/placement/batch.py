"""Batch pipelines on the capacity the online plan leaves: a second-stage MILP on HiGHS, after the online solve. Pure.

The online plan is solved first and kept as it is (`solver.solve`); batch work only takes what it leaves:

- **datacenter headroom**: per host shape of a privacy zone, the plan's pods are packed into the hosts by
  first-fit decreasing (`packing`, as every plan is checked), and what each host has left is free room. Hosts
  with the same room form one *bin* (`Bin`, `hosts` of them). A tier's workers use its home zone only
  (`candidates.datacenter_capacity`), as online pods do. Free GPUs of a host are for GPU workers only.
- **cloud**: new nodes of the site's instance types (`n` decided), on-demand within what the online plan left of
  the vCPU quotas and `max_nodes`, and spot where the pipeline allows it and `batch.spot_hourly_usd` prices the
  type (spot quotas are not modelled). Heads run on on-demand nodes only (a lost head loses the run).

Per batch pipeline b, with H_b worker-hours to do (items / throughput per worker) within a window of D_b hours
(its deadline, or the time between two runs of its schedule):

  w[b,k] workers of b on bin k (integer)       h[b,k] worker-hours b does there (continuous)
  hd[b,k] b's head on bin k (0/1)              y[b,s] b runs at site s (0/1)       n[k] new nodes of bin k

  sum_k h[b,k] = H_b (less a penalised shortfall)   h[b,k] <= D_b w[b,k]   (each worker works at most D_b hours)
  min_workers <= sum_k w[b,k] <= max_workers        sum_{k at s} w[b,k] <= max_workers y[b,s] = ... hd ... (one head)
  per bin: sum of the slot units of its pods <= units per node x (hosts | n[k])   (whole pods on whole nodes, `shapes`)
  per cloud site: on-demand vCPUs of new nodes <= quota - online; new nodes of a type <= max_nodes - online

Objective: the cost of one run: worker-hours x the price of a worker's room (new cloud nodes: the node price x its
share of the node; datacenter headroom: marginal cost of what it requests), plus each head for the window, plus
tie-breaks (fewer workers, sites, nodes). A worker costs its room for the hours it works, so the cheapest room
wins: datacenter headroom first, then spot, then on-demand. All batch pipelines are counted as running at once, on
the room left at the online peak (conservative for pipelines whose runs do not overlap).

A shortfall means the deadline cannot be met: `PlacementInfeasible` names the throughput needed and the most one
pipeline reaches alone on that capacity.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from infra import limits
from infra.batch import BatchPipeline
from infra.errors import InfeasibleReason, PlacementInfeasible
from infra.spec import CloudSite, Datacenter, Environment, InstanceType, PrivacyTier
from policies.placement import candidates as cand
from policies.placement import shapes
from policies.placement.milp import FEASIBLE, INF, Model, Result, solver_version
from policies.placement.packing import Pods, _Lookup, pack
from policies.placement.plan import (
    BatchNodes,
    BatchPlacement,
    BatchPlan,
    BatchSitePlacement,
    Explanation,
    PlacementPlan,
)
from policies.placement.shapes import EPS, Need, NodeShape

WORKER_TIEBREAK = 1e-4   # $ per worker: no idle workers
SITE_TIEBREAK = 1e-3     # $ per site used: one RayCluster where one does
NODE_TIEBREAK = 1e-3     # $ per new node: no node bought for nothing
SHORT_PENALTY = 1e6      # $ per worker-hour the deadline misses (elastic: the shortfall is reported)
OWN, ON_DEMAND, SPOT = "own", "on-demand", "spot"


@dataclass(frozen=True)
class Bin:
    """Room batch pods may use at a site: `hosts` identical rooms of datacenter headroom, or new cloud nodes."""

    key: str
    site: str
    label: str
    zone: PrivacyTier | None         # datacenter: the privacy zone of these hosts
    gpu_type: str | None             # GPU type of these nodes (None: no GPUs, or none left)
    room: Need                       # per node: free room (headroom) or allocatable (new nodes)
    hosts: int | None                # headroom: nodes with this room; new nodes: None (decided)
    capacity_type: str               # own | on-demand | spot
    node_price: float = 0.0          # $/h of one new node
    instance: InstanceType | None = None
    marginal: tuple[float, float, dict[str, float]] = (0.0, 0.0, {})   # datacenter $/core-h, $/GiB-h, $/GPU-h

    def price(self, need: Need, units: int, capacity: int) -> float:
        """$/h of one pod of `need` here (taking `units` of a node's `capacity` units)."""
        if self.hosts is not None:
            core, mem, gpu = self.marginal
            return need.cores * core + need.memory_gib * mem + need.gpus * gpu.get(self.gpu_type or "", 0.0)
        return self.node_price * units / capacity


@dataclass(frozen=True)
class Item:
    """The pods of a batch pipeline: its workers, or its head."""

    batch: str
    head: bool
    need: Need
    gpu_type: str | None

    @property
    def name(self) -> str:
        return f"{self.batch}/{'head' if self.head else 'worker'}"


@dataclass
class _Vars:
    w: dict[tuple[str, str], int] = field(default_factory=dict)    # (batch, bin) -> workers
    h: dict[tuple[str, str], int] = field(default_factory=dict)    # (batch, bin) -> worker-hours
    hd: dict[tuple[str, str], int] = field(default_factory=dict)   # (batch, bin) -> head here
    y: dict[tuple[str, str], int] = field(default_factory=dict)    # (batch, site) -> runs there
    n: dict[str, int] = field(default_factory=dict)                # bin -> new nodes
    short: dict[str, int] = field(default_factory=dict)            # batch -> worker-hours missing
    few: dict[str, int] = field(default_factory=dict)              # batch -> workers below min_workers
    slots: dict[str, tuple[int, int, dict[str, int]]] = field(default_factory=dict)   # bin -> (row, capacity, units)


# --------------------------------------------------------------------------- capacity left by the online plan


def rooms_after(shape: NodeShape, nodes: int, pods: Sequence[Pods]) -> np.ndarray:
    """Per node of `shape`, (GPUs, cores, GiB) left once `pods` are packed by first-fit decreasing (`packing.pack`)."""
    return pack(shape, nodes, pods)[0]


def headroom_bins(env: Environment, plan: PlacementPlan) -> list[Bin]:
    """The datacenters' free room after the online plan's pods, grouped into bins of identical hosts."""
    look = _Lookup(env)
    out: list[Bin] = []
    for dc in env.datacenters:
        groups = {g.shape: g for g in plan.site(dc.name).node_groups}
        mc = dc.marginal_cost
        for shape in shapes.site_packing(env, dc).shapes:
            assert shape.hosts is not None and shape.zone is not None   # datacenter shapes
            g = groups.get(shape.key)
            pods = [Pods(item, look.pods(dc, item)[1], n) for item, n in sorted(g.pods.items())] if g else []
            left = rooms_after(shape, shape.hosts, pods)
            counts = Counter((int(r[0] + EPS), math.floor(r[1] * 1000 + EPS) / 1000, math.floor(r[2] * 1000 + EPS) / 1000)
                             for r in left)
            for i, ((gpus, cores, mem), hosts) in enumerate(sorted(counts.items(), reverse=True)):
                if cores < 0.1 or mem < 0.1:
                    continue
                room = Need(gpus, cores, mem)
                out.append(Bin(
                    key=f"{dc.name}/{shape.key}#{i}", site=dc.name,
                    label=f"headroom of {hosts} {shape.zone.value} host(s) {shape.name}: {room.describe(shape.gpu_type)} free each",
                    zone=shape.zone, gpu_type=shape.gpu_type if gpus else None, room=room, hosts=hosts,
                    capacity_type=OWN, marginal=(mc.core_hour_usd, mc.memory_gib_hour_usd, dict(mc.gpu_hour_usd))))
    return out


def cloud_bins(env: Environment) -> list[Bin]:
    """New nodes of every cloud instance type: on-demand, and spot where `batch.spot_hourly_usd` prices it."""
    out: list[Bin] = []
    for site in env.cloud_sites:
        spot = env.batch.spot_hourly_usd.get(site.name, {})
        for it in site.instance_types:
            a = Need(it.gpu.count if it.gpu else 0, it.vcpus * cand.CLOUD_ALLOCATABLE, it.memory_gib * cand.CLOUD_ALLOCATABLE)
            gpu = it.gpu.type if it.gpu else None
            out.append(Bin(f"{site.name}/{it.name}/{ON_DEMAND}", site.name, f"new on-demand {it.name} at ${it.hourly_usd:g}/h",
                           None, gpu, a, None, ON_DEMAND, it.hourly_usd, it))
            if it.name in spot:
                out.append(Bin(f"{site.name}/{it.name}/{SPOT}", site.name, f"new spot {it.name} at ${spot[it.name]:g}/h",
                               None, gpu, a, None, SPOT, spot[it.name], it))
    return out


# --------------------------------------------------------------------------- who may go where


def _tier(b: BatchPipeline) -> PrivacyTier:
    return PrivacyTier(b.privacy_tier)


def items_of(b: BatchPipeline) -> tuple[Item, Item]:
    r = b.resources
    worker = Item(b.name, False, Need(r.gpu.count if r.gpu else 0, r.cpu, r.memory_gib), r.gpu.type if r.gpu else None)
    return worker, Item(b.name, True, Need(0, b.head.cpu, b.head.memory_gib), None)


def site_rejection(env: Environment, b: BatchPipeline, site: CloudSite | Datacenter) -> str | None:
    """Why `site` may never hold b's pods: privacy tier, jurisdiction of its data, no zone for the tier."""
    if _tier(b) not in cand.allowed_tiers(site):
        allowed = site.allowed_tiers if isinstance(site, Datacenter) else site.privacy_tiers
        return f"privacy: site holds {', '.join(t.value for t in allowed)}; batch data is {b.privacy_tier}"
    if b.allowed_jurisdictions is not None and site.jurisdiction not in b.allowed_jurisdictions:
        return f"jurisdiction: the data stays in {', '.join(b.allowed_jurisdictions)}; site is {site.jurisdiction}"
    if isinstance(site, Datacenter) and cand.datacenter_capacity(site).home[_tier(b).rank] is None:
        return f"no racks of a privacy zone that may hold {b.privacy_tier}"
    return None


def fits(env: Environment, b: BatchPipeline, item: Item, k: Bin) -> bool:
    """Whether pods of `item` may use bin `k` (its site assumed allowed)."""
    site = env.site(k.site)
    if isinstance(site, Datacenter):
        home = cand.datacenter_capacity(site).home[_tier(b).rank]
        if k.zone is None or home != k.zone.rank:
            return False
        if item.need.gpus:
            if k.gpu_type != item.gpu_type or k.room.gpus < item.need.gpus:
                return False
        elif k.room.gpus:   # free GPUs are kept for GPU workers
            return False
    else:
        if (item.need.gpus > 0) != (k.gpu_type is not None) or (item.need.gpus and k.gpu_type != item.gpu_type):
            return False
        if k.capacity_type == SPOT and (item.head or not b.spot):
            return False
    return shapes.per_node(k.room, item.need) > 0


def _units(env: Environment, k: Bin, items: Iterable[tuple[Item, float]]) -> tuple[int, dict[str, int]]:
    """Slot units of a bin: (units per node, item -> units one pod takes), on one divisibility chain (`shapes`)."""
    ks = {it.name: shapes.per_node(k.room, it.need) for it, _ in items}
    weights: dict[int, float] = {}
    for it, expected in items:
        weights[ks[it.name]] = weights.get(ks[it.name], 0.0) + expected
    chain = shapes.divisible_chain(weights)
    capacity = max(chain.values())
    return capacity, {name: capacity // chain[per] for name, per in ks.items()}


# --------------------------------------------------------------------------- the model


def _build(env: Environment, plan: PlacementPlan, batches: list[BatchPipeline], bins: list[Bin]) -> tuple[Model, _Vars]:
    m, v = Model(), _Vars()
    allowed = {b.name: {s.name for s in env.sites if site_rejection(env, b, s) is None} for b in batches}
    users: dict[str, list[tuple[BatchPipeline, Item]]] = {}
    for b in batches:
        for item in items_of(b):
            for k in bins:
                if k.site in allowed[b.name] and fits(env, b, item, k):
                    users.setdefault(k.key, []).append((b, item))
    by_key = {k.key: k for k in bins}
    for key, here in users.items():
        k = by_key[key]
        capacity, units = _units(env, k, [(it, 1.0 if it.head else float(b.min_workers_for_deadline)) for b, it in here])
        terms: list[tuple[int, float]] = []
        for b, it in here:
            price = k.price(it.need, units[it.name], capacity)
            if it.head:
                var = v.hd[(b.name, key)] = m.var(0, 1, b.window_hours * price, integer=True)
            else:
                var = v.w[(b.name, key)] = m.var(0, b.max_workers, WORKER_TIEBREAK, integer=True)
                hours = v.h[(b.name, key)] = m.var(0, INF, price)
                m.row([(hours, 1.0), (var, -b.window_hours)], -INF, 0)
            terms.append((var, float(units[it.name])))
        if k.hosts is not None:
            row = m.row(terms, -INF, float(capacity * k.hosts))
        else:
            v.n[key] = m.var(0, INF, NODE_TIEBREAK, integer=True)
            row = m.row(terms + [(v.n[key], -float(capacity))], -INF, 0)
        v.slots[key] = (row, capacity, units)
    for b in batches:
        workers = [(var, 1.0) for (name, _), var in v.w.items() if name == b.name]
        hour_terms = [(var, 1.0) for (name, _), var in v.h.items() if name == b.name]
        v.short[b.name] = m.var(0, INF, SHORT_PENALTY)
        m.row(hour_terms + [(v.short[b.name], 1.0)], b.worker_hours, b.worker_hours)
        # min_workers is elastic too: where the capacity left holds fewer, the shortfall is reported, not a solver error
        v.few[b.name] = m.var(0, INF, SHORT_PENALTY)
        m.row(workers + [(v.few[b.name], 1.0)], b.min_workers, INF)
        if workers:
            m.row(workers, -INF, b.max_workers)
        for s in sorted({by_key[key].site for (name, key) in v.w if name == b.name}):
            y = v.y[(b.name, s)] = m.var(0, 1, SITE_TIEBREAK, integer=True)
            m.row([(var, 1.0) for (name, key), var in v.w.items() if name == b.name and by_key[key].site == s]
                  + [(y, -float(b.max_workers))], -INF, 0)
            m.row([(var, 1.0) for (name, key), var in v.hd.items() if name == b.name and by_key[key].site == s]
                  + [(y, -1.0)], 0, 0)
    # cloud limits: what the online plan left of the on-demand vCPU quotas and of max_nodes
    for site in env.cloud_sites:
        online = plan.site(site.name).nodes
        for family, quota in sorted(site.vcpu_quotas.items()):
            used = sum(it.vcpus * online.get(it.name, 0) for it in site.instance_types if it.quota_family == family)
            quota_terms = [(v.n[k.key], float(k.instance.vcpus)) for k in bins if k.key in v.n and k.site == site.name
                           and k.capacity_type == ON_DEMAND and k.instance is not None and k.instance.quota_family == family]
            if quota_terms:
                m.row(quota_terms, -INF, float(max(0, quota - used)))
        for itype in site.instance_types:
            if itype.max_nodes is None:
                continue
            node_terms = [(v.n[k.key], 1.0) for k in bins if k.key in v.n and k.site == site.name and k.instance is itype]
            if node_terms:
                m.row(node_terms, -INF, float(max(0, itype.max_nodes - online.get(itype.name, 0))))
    return m, v


def _solve(m: Model, time_limit: float) -> Result:
    res = m.solve(time_limit=time_limit, mip_gap=1e-6)
    if res.status not in FEASIBLE:
        raise RuntimeError(f"batch placement: HiGHS returned {res.status} on a model that is always feasible (elastic)")
    return res


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


# --------------------------------------------------------------------------- the plan and its reasons


def place_batch(env: Environment, plan: PlacementPlan, *, time_limit: float = 30.0) -> PlacementPlan:
    """The online `plan` with its batch stage (`plan.batch`). Raises PlacementInfeasible when a pipeline has no
    site at all or cannot finish before its deadline on what the online plan leaves."""
    batches = list(env.batch.pipelines)
    if not batches:
        return plan
    started = time.perf_counter()
    bins = headroom_bins(env, plan) + cloud_bins(env)
    by_key = {k.key: k for k in bins}
    reasons = []
    for b in batches:
        rejected = {s.name: site_rejection(env, b, s) for s in env.sites}
        if all(rejected.values()):
            reasons.append(InfeasibleReason(b.name, "eligibility", f"no site may hold {b.privacy_tier} batch data: " +
                                            "; ".join(f"{s}: {why}" for s, why in rejected.items()),
                                            "allow the tier on a site, or widen allowed_jurisdictions"))
    if reasons:
        raise PlacementInfeasible(reasons)
    m, v = _build(env, plan, batches, bins)
    res = _solve(m, time_limit)
    short = {b.name: res.values[v.short[b.name]] for b in batches}
    for b in batches:
        if short[b.name] > 1e-6:
            reasons.append(_deadline_reason(env, plan, b, bins, time_limit))
        elif res.values[v.few[b.name]] > 1e-6:
            fit = b.min_workers - _round(res.values[v.few[b.name]])
            reasons.append(InfeasibleReason(
                b.name, "capacity", f"min_workers is {b.min_workers} but only {fit} worker(s) fit in the capacity the "
                "online plan leaves on the sites allowed (datacenter headroom, cloud quota and max_nodes)",
                "lower min_workers, raise the cloud quota or max_nodes, or allow another site"))
    if reasons:
        raise PlacementInfeasible(reasons)
    val = res.values
    nodes: list[BatchNodes] = []
    for key in sorted(v.n):
        # the nodes the placed pods need (the solver may leave a spare node within its gap: tie-breaks are cents)
        _, capacity, units = v.slots[key]
        used = sum(units[f"{name}/worker"] * _round(val[var]) for (name, bk), var in v.w.items() if bk == key)
        used += sum(units[f"{name}/head"] * _round(val[var]) for (name, bk), var in v.hd.items() if bk == key)
        count = math.ceil(used / capacity)
        k = by_key[key]
        if count and k.instance is not None:
            nodes.append(BatchNodes(site=k.site, instance_type=k.instance.name, capacity_type=k.capacity_type,
                                    nodes=count, usd_per_hour=round(count * k.node_price, 4)))
    tight = {key for key, (row, capacity, units) in v.slots.items()
             if key not in v.n and by_key[key].hosts is not None
             and capacity * (by_key[key].hosts or 0) - res.row_values[row] < min(units.values()) - 1e-6}
    placements = [_placement(env, plan, b, v, val, by_key, tight) for b in batches]
    return plan.model_copy(update={"batch": BatchPlan(
        status=res.status, solve_seconds=round(time.perf_counter() - started, 3),
        solver=f"{solver_version()} (batch stage on the online plan's leftover capacity)", pipelines=placements,
        nodes=nodes)})


def _placement(env: Environment, plan: PlacementPlan, b: BatchPipeline, v: _Vars, val: np.ndarray, by_key: dict[str, Bin],
               tight: set[str]) -> BatchPlacement:
    worker, head = items_of(b)
    per_site: dict[str, dict[str, float]] = {}
    capacity: dict[str, dict[str, int]] = {}
    groups: dict[str, dict[str, int]] = {}
    for (name, key), var in v.w.items():
        n = _round(val[var])
        if name != b.name or n == 0:
            continue
        k = by_key[key]
        row = per_site.setdefault(k.site, {"workers": 0, "hours": 0.0, "cost": 0.0})
        hours = float(val[v.h[(name, key)]])
        _, cap, units = v.slots[key]
        row["workers"] += n
        row["hours"] += hours
        row["cost"] += hours * k.price(worker.need, units[worker.name], cap)
        capacity.setdefault(k.site, {})[k.label] = capacity.get(k.site, {}).get(k.label, 0) + n
        groups.setdefault(k.site, {})[k.capacity_type] = groups.get(k.site, {}).get(k.capacity_type, 0) + n
    heads = {by_key[key].site: by_key[key] for (name, key), var in v.hd.items() if name == b.name and _round(val[var])}
    shares = _split(b.size.items, {s: row["hours"] for s, row in per_site.items()})
    sites: list[BatchSitePlacement] = []
    for s in sorted(per_site):
        row = per_site[s]
        run_hours = row["hours"] / row["workers"]
        hk = heads[s]
        _, cap, units = v.slots[hk.key]
        cost = row["cost"] + run_hours * hk.price(head.need, units[head.name], cap)
        sites.append(BatchSitePlacement(
            site=s, kind=env.site(s).kind, workers=int(row["workers"]), worker_groups=dict(sorted(groups[s].items())),
            items=shares[s], worker_hours=round(row["hours"], 3), hours=round(run_hours, 3),
            cost_usd=round(cost, 4), usd_per_hour=round(cost / run_hours if run_hours else 0.0, 4),
            capacity=dict(sorted(capacity[s].items())), head=hk.label))
    total = sum(s.workers for s in sites)
    finish = max((s.hours for s in sites), default=0.0)
    return BatchPlacement(
        name=b.name, engine=b.engine.kind, privacy_tier=b.privacy_tier, items=b.size.items, window_hours=round(b.window_hours, 4),
        deadline_hours=b.deadline_hours, schedule=b.schedule, needed_items_per_s=round(b.needed_items_per_s, 4),
        planned_items_per_s=round(total * b.items_per_worker_second, 4), workers=total, finish_hours=round(finish, 3),
        cost_usd_per_run=round(sum(s.cost_usd for s in sites), 4), sites=sites,
        explanation=_explain(env, plan, b, sites, by_key, v, val, tight))


def _split(total: int, weights: dict[str, float]) -> dict[str, int]:
    """`total` items over sites in proportion to their worker-hours (largest remainder, ties by name)."""
    wsum = sum(weights.values())
    if not weights or wsum <= 0:
        return {s: 0 for s in weights}
    exact = {s: total * w / wsum for s, w in weights.items()}
    out = {s: math.floor(x) for s, x in exact.items()}
    for s in sorted(exact, key=lambda s: (-(exact[s] - out[s]), s))[: total - sum(out.values())]:
        out[s] += 1
    return out


def _explain(env: Environment, plan: PlacementPlan, b: BatchPipeline, sites: list[BatchSitePlacement], by_key: dict[str, Bin],
             v: _Vars, val: np.ndarray, tight: set[str]) -> Explanation:
    worker, _ = items_of(b)
    chosen = []
    for s in sites:
        where = "; ".join(f"{n} on {label}" for label, n in s.capacity.items())
        chosen.append(f"{s.site}: {s.workers} worker(s) ({where}); {s.items:,} items in {s.hours:.2f} h; "
                      f"${s.usd_per_hour:,.3f}/h while running, ${s.cost_usd:,.2f} per run; head on {s.head}")
    used = {s.site for s in sites}
    def worker_price(key: str) -> float:
        return by_key[key].price(worker.need, v.slots[key][2][worker.name], v.slots[key][1])

    placed = [key for (name, key), var in v.w.items() if name == b.name and _round(val[var])]
    cheapest_used = max((worker_price(key) for key in placed), default=0.0)
    rejected: dict[str, str] = {}
    for site in env.sites:
        if site.name in used:
            continue
        why = site_rejection(env, b, site)
        if why is None:
            keys = [key for (name, key) in v.w if name == b.name and by_key[key].site == site.name]
            if not keys:
                why = _no_room(env, b, site, worker)
            else:
                limits = {key: _nodes_left(env, plan, by_key[key]) for key in keys if key in v.n}
                open_keys = [key for key in keys if (limits[key][0] > 0 if key in v.n else key not in tight)]
                if not open_keys:
                    full = ["its headroom is taken by other batch pipelines"] if any(key not in v.n for key in keys) else []
                    why = "capacity: " + "; ".join(full + sorted({limits[key][1] for key in limits}))
                else:
                    here = min(worker_price(key) for key in open_keys)
                    why = (f"cost: ${here:.3f} per worker-hour vs ${cheapest_used:.3f} where placed" if here > cheapest_used + 1e-9
                           else "not needed: the deadline is met by the sites chosen")
        rejected[site.name] = why
    binding = [f"deadline: {b.size.items:,} items in {b.window_hours:g} h need {b.needed_items_per_s:,.2f} items/s; one "
               f"worker does {b.items_per_worker_second:,.2f}/s, so at least {b.min_workers_for_deadline} worker(s) "
               f"({b.worker_hours:,.1f} worker-hours)"]
    if b.schedule:
        binding.append(f"schedule {b.schedule!r}: a run must end before the next"
                       + ("" if b.deadline_hours is None else f" and within deadline_hours {b.deadline_hours:g}"))
    total = sum(s.workers for s in sites)
    if total == b.max_workers:
        binding.append(f"max_workers={b.max_workers}")
    if _tier(b).is_sensitive or b.allowed_jurisdictions:
        ok = [s.name for s in env.sites if site_rejection(env, b, s) is None]
        binding.append(f"privacy/jurisdiction: {b.privacy_tier} data only on {', '.join(ok)}")
    for key in sorted(tight):
        if (b.name, key) in v.w and _round(val[v.w[(b.name, key)]]):
            binding.append(f"{by_key[key].site}: {by_key[key].label} fully used")
    if b.spot and not env.batch.spot_hourly_usd:
        binding.append("spot allowed, but batch.spot_hourly_usd prices no instance type: on-demand only")
    where = ", ".join(f"{s.site} ({s.workers})" for s in sites)
    cost = sum(s.cost_usd for s in sites)
    summary = (f"{total} worker(s) on {where}: {b.size.items:,} items in {max((s.hours for s in sites), default=0):.2f} h "
               f"(window {b.window_hours:g} h), ${cost:,.2f} per run")
    return Explanation(summary=summary, chosen=chosen, rejected=dict(sorted(rejected.items())), binding=binding)


def _nodes_left(env: Environment, plan: PlacementPlan, k: Bin) -> tuple[int, str]:
    """New nodes of a cloud bin's type the online plan leaves room for (max_nodes, on-demand vCPU quota), and why not more."""
    it = k.instance
    assert it is not None
    site = env.site(k.site)
    assert isinstance(site, CloudSite)
    online = plan.site(k.site).nodes
    left, why = limits.MAX_COUNT, ""
    if it.max_nodes is not None and it.max_nodes - online.get(it.name, 0) < left:
        left = max(0, it.max_nodes - online.get(it.name, 0))
        why = f"max_nodes of {it.name} ({it.max_nodes}) leaves {left} after the online plan"
    quota = site.vcpu_quotas.get(it.quota_family) if k.capacity_type == ON_DEMAND else None  # type: ignore[call-overload]
    if quota is not None:
        used = sum(t.vcpus * online.get(t.name, 0) for t in site.instance_types if t.quota_family == it.quota_family)
        if max(0, quota - used) // it.vcpus < left:
            left = max(0, quota - used) // it.vcpus
            why = f"on-demand {it.quota_family} vCPU quota: {max(0, quota - used)} of {quota} left after the online plan"
    return left, why


def _no_room(env: Environment, b: BatchPipeline, site: CloudSite | Datacenter, worker: Item) -> str:
    """Why an allowed site has no bin for b's workers."""
    need = worker.need.describe(worker.gpu_type)
    if isinstance(site, CloudSite):
        return f"no instance type fits a worker ({need})"
    zone = cand.TIERS[cand.datacenter_capacity(site).home[_tier(b).rank] or 0]
    hosts = [s for s in shapes.site_packing(env, site).shapes if s.zone == zone]
    if worker.gpu_type and not any(s.gpu_type == worker.gpu_type for s in hosts):
        return f"no {worker.gpu_type} GPUs in the racks of privacy zone {zone.value} (where {b.privacy_tier} work runs here)"
    if not any(shapes.per_node(s.allocatable, worker.need) for s in hosts):
        return f"no host of privacy zone {zone.value} fits a worker ({need})"
    return f"no room for a worker ({need}) in privacy zone {zone.value} after the online peak"


def _deadline_reason(env: Environment, plan: PlacementPlan, b: BatchPipeline, bins: list[Bin],
                     time_limit: float) -> InfeasibleReason:
    """The deadline b misses: the throughput it needs, and the most it reaches alone on the capacity left."""
    m, v = _build(env, plan, [b], bins)
    res = _solve(m, time_limit)
    done = b.worker_hours - float(res.values[v.short[b.name]])
    reach = done * b.items_per_worker_second / b.window_hours
    workers: dict[str, int] = {}
    for (_, key), var in v.w.items():
        n = _round(res.values[var])
        if n:
            site = key.split("/", 1)[0]
            workers[site] = workers.get(site, 0) + n
    total = sum(workers.values())
    where = ", ".join(f"{s} {n}" for s, n in sorted(workers.items())) or "none"
    limit = f"max_workers {b.max_workers}" if total >= b.max_workers else "the capacity left after the online peak"
    return InfeasibleReason(
        b.name, "deadline",
        f"needs {b.needed_items_per_s:,.2f} items/s ({b.size.items:,} items in {b.window_hours:g} h, "
        f"{b.min_workers_for_deadline} workers at {b.items_per_worker_second:,.2f} items/s each); at most "
        f"{reach:,.2f} items/s reachable ({total} workers: {where}; limited by {limit})",
        "extend the deadline, raise max_workers or throughput per worker, allow spot or more sites, or add capacity")
