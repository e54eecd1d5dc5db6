"""Whole replicas on whole nodes: node shapes, pod needs and the slot units the solver packs with. Pure.

A site's nodes come in *shapes*: each cloud instance type (nodes bought by the piece) and each distinct
host shape (cores, memory, GPUs) of a datacenter privacy zone (a fixed number of hosts). A pod fits a shape
when its GPUs, cores and memory each fit what the node keeps for pods: `CLOUD_ALLOCATABLE` of a cloud
instance, `1 - system_reserved_fraction` of a host.

Parts. Cloud GPU nodes hold GPU pods only (they are tainted), cloud CPU nodes the other pods. A datacenter
GPU host holds both: GPU pods get `gpu_cores`/`gpu_memory_gib` of it (its GPUs times the largest cores and
memory per GPU of any GPU pod that may land there, so GPU pods can never use more, however they are
packed) and the other pods the rest. The two parts of a host pack independently.

Slots. In a part, `k` pods of one kind alone fill a node: the least, over GPUs, cores and memory, of
floor(part capacity / pod need). Each pod takes 1/k' of a node, where k' <= k is k rounded down onto one
divisibility chain per part (every k' divides every larger k'); `capacity` is the chain's largest k', so
a pod takes `units = capacity / k'` of a node's `capacity` units, an integer. The solver asks, per part,
sum(units of its pods) <= capacity x nodes. Why that is enough (README "Placement", packing): first-fit
decreasing then places every pod. The chain is chosen per part to lose the least node room.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from infra.dataflow import effective_tier
from infra.spec import CloudSite, Datacenter, Environment, InstanceType, Pipeline, PrivacyTier
from policies.placement import candidates as cand

MAX_PER_NODE = 256  # pods of one kind counted per node at most (a smaller one still takes 1/256 of a node)
EPS = 1e-9


@dataclass(frozen=True)
class Need:
    """What one pod requests (or one node keeps for pods)."""

    gpus: int
    cores: float
    memory_gib: float

    def describe(self, gpu_type: str | None = None) -> str:
        gpus = f"{cand.gpu_label(self.gpus, gpu_type or 'GPU')}, " if self.gpus else ""
        return f"{gpus}{self.cores:g} cores, {self.memory_gib:g} GiB"


@dataclass(frozen=True)
class NodeShape:
    """Identical nodes of a site: a cloud instance type, or the hosts of one shape in a datacenter zone."""

    site: str
    name: str                   # instance type (cloud) or "64c-512GiB-4xL4" (datacenter host shape, raw)
    zone: PrivacyTier | None    # datacenter privacy zone of these hosts
    hosts: int | None           # datacenter: how many; cloud: None (node counts are decided)
    gpu_type: str | None
    allocatable: Need           # what one node keeps for pods
    gpu_cores: float = 0.0      # the part of `allocatable` GPU pods may use (datacenter GPU hosts)
    gpu_memory_gib: float = 0.0
    instance: InstanceType | None = None

    @property
    def key(self) -> str:
        return f"{self.zone.value}/{self.name}" if self.zone is not None else self.name

    def part(self, gpu: bool) -> Need:
        """What the part for GPU pods (gpu=True) or for the other pods keeps on one node."""
        a = self.allocatable
        if self.instance is not None:  # cloud: GPU nodes hold GPU pods only, CPU nodes the rest
            return a if gpu == (a.gpus > 0) else Need(0, 0.0, 0.0)
        if gpu:
            return Need(a.gpus, self.gpu_cores, self.gpu_memory_gib) if a.gpus else Need(0, 0.0, 0.0)
        return Need(0, max(0.0, a.cores - self.gpu_cores), max(0.0, a.memory_gib - self.gpu_memory_gib))


@dataclass(frozen=True)
class Part:
    """The slot table of one part of one shape: every item that fits, in integer units of a node."""

    shape: NodeShape
    gpu: bool
    capacity: int                               # units per node
    units: dict[str, int]                       # item -> units one pod of it takes

    @property
    def room(self) -> Need:
        return self.shape.part(self.gpu)

    def nodes_for(self, item: str, pods: int) -> float:
        return pods * self.units[item] / self.capacity


@dataclass
class SitePacking:
    """Per site: its shapes, the parts the solver keeps (dominated cloud shapes pruned), and per item
    (pipeline name or data key) its pods and the parts they fit, cheapest first."""

    site: str
    shapes: list[NodeShape] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    pods: dict[str, tuple[int, Need]] = field(default_factory=dict)   # item -> (pods per replica/piece, one pod)
    fits: dict[str, list[Part]] = field(default_factory=dict)
    pruned: dict[str, str] = field(default_factory=dict)              # shape key -> the shape that replaces it

    def shape(self, key: str) -> NodeShape:
        return next(s for s in self.shapes if s.key == key)


def pipeline_pod(p: Pipeline, site: CloudSite | Datacenter) -> tuple[int, Need]:
    """(pods per replica, one pod's need): a vLLM replica wider than a cloud node spans whole nodes,
    one pod per node (candidates.replica_nodes); everything else is one pod."""
    if p.gpu is None:
        return 1, Need(0, p.resources.cpu, p.resources.memory_gib)
    k = cand.replica_nodes(p, site) if isinstance(site, CloudSite) else 1
    return k, Need(math.ceil(p.gpu.count / k), p.resources.cpu / k, p.resources.memory_gib / k)


def per_node(room: Need, need: Need) -> int:
    """How many such pods one node's `room` holds (0: not one)."""
    if need.gpus > room.gpus:
        return 0
    k = room.gpus // need.gpus if need.gpus else MAX_PER_NODE
    for have, want in ((room.cores, need.cores), (room.memory_gib, need.memory_gib)):
        if want > 0:
            k = min(k, math.floor(have / want + EPS))
    return max(0, min(k, MAX_PER_NODE))


def divisible_chain(weights: dict[int, float]) -> dict[int, int]:
    """Round every k (pods per node) down onto one divisibility chain, losing the least node room.

    `weights`: k -> how many such pods are expected. Returns k -> k' with k' <= k and, for any two
    results, the smaller dividing the larger; minimises sum w (1/k' - 1/k) (the share of nodes lost).
    """
    if not weights:
        return {}
    top, low = max(weights), min(weights)
    w_sum = [0.0] * (top + 2)    # prefix sums over k < v of w and of w / k
    r_sum = [0.0] * (top + 2)
    for v in range(1, top + 2):
        w = weights.get(v - 1, 0.0)
        w_sum[v] = w_sum[v - 1] + w
        r_sum[v] = r_sum[v - 1] + (w / (v - 1) if v > 1 else 0.0)

    def loss(u: int, v: int) -> float:   # every k in [u, v) rounded to u
        return (w_sum[v] - w_sum[u]) / u - (r_sum[v] - r_sum[u])

    best = [math.inf] * (top + 1)       # best[v]: least loss of a chain ending at v covering every k < v
    prev = [0] * (top + 1)
    for v in range(1, low + 1):
        best[v] = 0.0
    for u in range(1, top + 1):
        if best[u] == math.inf:
            continue
        for v in range(2 * u, top + 1, u):
            c = best[u] + loss(u, v)
            if c < best[v] - 1e-12:
                best[v], prev[v] = c, u
    end = min(range(1, top + 1), key=lambda v: (best[v] + loss(v, top + 1), -v))
    chain = [end]
    while prev[chain[-1]]:
        chain.append(prev[chain[-1]])
    chain.sort()
    return {k: max(c for c in chain if c <= k) for k in weights}


def _cloud_shapes(site: CloudSite) -> list[NodeShape]:
    keep = cand.CLOUD_ALLOCATABLE
    return [NodeShape(site.name, it.name, None, None, it.gpu.type if it.gpu else None,
                      Need(it.gpu.count if it.gpu else 0, it.vcpus * keep, it.memory_gib * keep), instance=it)
            for it in site.instance_types]


def _host_name(cores: int, memory_gib: float, gpu: tuple[str, int] | None) -> str:
    return f"{cores}c-{memory_gib:g}GiB" + (f"-{gpu[1]}x{gpu[0]}" if gpu else "")


def _datacenter_shapes(env: Environment, dc: Datacenter) -> list[NodeShape]:
    keep = 1 - dc.system_reserved_fraction
    home = cand.datacenter_capacity(dc).home
    counts: dict[tuple[int, int, float, tuple[str, int] | None], int] = {}
    for rack, host in dc.all_hosts():
        gpu = (host.gpu.type, host.gpu.count) if host.gpu else None
        key = (rack.privacy_zone.rank, host.cores, host.memory_gib, gpu)
        counts[key] = counts.get(key, 0) + 1
    out = []
    for (zone, cores, mem, gpu), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][3] is not None, str(kv[0]))):
        room = Need(gpu[1] if gpu else 0, cores * keep, mem * keep)
        gpu_cores = gpu_mem = 0.0
        if gpu:
            # GPU pods of this type whose home zone this is and that fit the host: their largest cores
            # and memory per GPU, times the host's GPUs, is all GPU pods can take of one host.
            ratios = [(p.resources.cpu / p.gpu.count, p.resources.memory_gib / p.gpu.count)
                      for p in env.pipelines if p.gpu and p.gpu.type == gpu[0] and home.get(effective_tier(env, p).rank) == zone
                      and _may_use(env, p, dc) and per_node(room, pipeline_pod(p, dc)[1]) > 0]
            if ratios:
                gpu_cores = min(room.cores, room.gpus * max(c for c, _ in ratios))
                gpu_mem = min(room.memory_gib, room.gpus * max(m for _, m in ratios))
                if gpu_cores >= room.cores - EPS or gpu_mem >= room.memory_gib - EPS:
                    gpu_cores, gpu_mem = room.cores, room.memory_gib   # nothing useful left for other pods
        out.append(NodeShape(dc.name, _host_name(cores, mem, gpu), cand.TIERS[zone], n, gpu[0] if gpu else None,
                             room, gpu_cores, gpu_mem))
    return out


def _may_use(env: Environment, p: Pipeline, site: CloudSite | Datacenter) -> bool:
    """Privacy (its effective tier, infra.dataflow) and pinning only: whether `p` could ever run at `site` (what
    sizes its shapes' parts)."""
    return effective_tier(env, p) in cand.allowed_tiers(site) and (p.pinned_sites is None or site.name in p.pinned_sites)


@dataclass(frozen=True)
class _Item:
    name: str                   # pipeline name or data key
    tier: PrivacyTier
    gpu_type: str | None
    pods: int                   # per replica (pipelines) or per piece (data)
    need: Need                  # one pod
    expected: float             # pods expected in all (weighs the rounding of slots)


def _items(env: Environment, site: CloudSite | Datacenter) -> Iterable[_Item]:
    """Everything that may run here (privacy and pinning allow it)."""
    for p in env.pipelines:
        if _may_use(env, p, site):
            pods, need = pipeline_pod(p, site)
            demand = sum(p.demand_rps.values())
            replicas = max(p.min_replicas, 1, math.ceil(demand / (p.capacity_rps * p.target_utilization) - EPS))
            yield _Item(p.name, effective_tier(env, p), p.gpu.type if p.gpu else None, pods, need, float(replicas * pods))
    for key, piece in cand.data_pieces(env).items():
        if piece.tier in cand.allowed_tiers(site):
            yield _Item(key, piece.tier, None, piece.pods, Need(0, piece.cpu / piece.pods, piece.memory_gib / piece.pods),
                        float(piece.pods))


def _build(env: Environment, site: CloudSite | Datacenter) -> SitePacking:
    out = SitePacking(site.name)
    out.shapes = _cloud_shapes(site) if isinstance(site, CloudSite) else _datacenter_shapes(env, site)
    home = cand.datacenter_capacity(site).home if isinstance(site, Datacenter) else {}
    items = list(_items(env, site))
    for i in items:
        out.pods[i.name] = (i.pods, i.need)
    for shape in out.shapes:
        for gpu in (True, False):
            room = shape.part(gpu)
            if room.cores <= EPS or room.memory_gib <= EPS:
                continue
            ks: dict[str, int] = {}
            weights: dict[int, float] = {}
            for i in items:
                if (i.need.gpus > 0) != gpu or (gpu and i.gpu_type != shape.gpu_type):
                    continue
                if shape.zone is not None and home.get(i.tier.rank) != shape.zone.rank:
                    continue
                k = per_node(room, i.need)
                if k > 0:
                    ks[i.name] = k
                    weights[k] = weights.get(k, 0.0) + i.expected
            if not ks:
                continue
            chain = divisible_chain(weights)
            capacity = max(chain.values())
            out.parts.append(Part(shape, gpu, capacity, {item: capacity // chain[k] for item, k in ks.items()}))
    if isinstance(site, CloudSite):
        _prune(site, out)
    for part in out.parts:
        for item in part.units:
            out.fits.setdefault(item, []).append(part)
    for item, parts in out.fits.items():
        parts.sort(key=lambda t: (_unit_price(t, item), t.shape.key))
    return out


def _unit_price(part: Part, item: str) -> float:
    """$/h of the node room one pod of `item` takes on this part (0 on datacenter hosts)."""
    it = part.shape.instance
    return it.hourly_usd * part.units[item] / part.capacity if it is not None else 0.0


def _prune(site: CloudSite, out: SitePacking) -> None:
    """Drop the cloud parts another part of the same pool replaces at no more cost: `m` nodes of it hold
    whatever one node of the dropped type holds (slot for slot), cost no more, use no more of the same vCPU
    quota (or one without a quota) and have no max_nodes. The optimum is unchanged, with fewer variables."""
    def dominated(t: Part, by: Part) -> bool:
        a, b = t.shape.instance, by.shape.instance
        assert a is not None and b is not None  # cloud parts
        if by is t or by.gpu != t.gpu or b.max_nodes is not None or by.shape.gpu_type != t.shape.gpu_type:
            return False
        for m in range(1, 9):
            cheaper = m * b.hourly_usd < a.hourly_usd or (m == 1 and b.hourly_usd == a.hourly_usd and b.name < a.name)
            quota = (b.quota_family == a.quota_family and m * b.vcpus <= a.vcpus) or b.quota_family not in site.vcpu_quotas
            if cheaper and quota and all(item in by.units and by.units[item] * t.capacity <= m * units * by.capacity
                                         for item, units in t.units.items()):
                return True
        return False

    keep = []
    for t in out.parts:
        by = next((o for o in out.parts if dominated(t, o)), None)
        if by is None:
            keep.append(t)
        else:
            out.pruned[t.shape.key] = by.shape.key
    out.parts = keep


_MEMO: dict[tuple[int, str], tuple[Environment, SitePacking]] = {}


def site_packing(env: Environment, site: CloudSite | Datacenter) -> SitePacking:
    """The packing tables of `site` (memoised per spec object; specs are immutable)."""
    hit = _MEMO.get((id(env), site.name))
    if hit is not None and hit[0] is env:
        return hit[1]
    value = _build(env, site)
    _MEMO[(id(env), site.name)] = (env, value)
    return value


def replica_cost(env: Environment, p: Pipeline, site: CloudSite | Datacenter) -> float:
    """$/hour of one replica at a site: own datacenters at marginal cost of what it requests; cloud at the
    price of the node room its pods take on the cheapest shape they fit (explanations, the greedy baseline)."""
    if isinstance(site, Datacenter):
        mc = site.marginal_cost
        cost = p.resources.cpu * mc.core_hour_usd + p.resources.memory_gib * mc.memory_gib_hour_usd
        if p.gpu:
            cost += p.gpu.count * mc.gpu_hour_usd.get(p.gpu.type, 0.0)
        return cost
    pack = site_packing(env, site)
    pods = pack.pods.get(p.name, (1, None))[0]
    return min((pods * _unit_price(t, p.name) for t in pack.fits.get(p.name, [])), default=math.inf)


def largest_room(pack: SitePacking, need: Need, gpu_type: str | None, zone: PrivacyTier | None) -> tuple[NodeShape, Need] | None:
    """The roomiest shape (and the part) a pod like `need` would use here: most GPUs, then cores, then memory."""
    best: tuple[NodeShape, Need] | None = None
    for shape in pack.shapes:
        if (zone is not None and shape.zone != zone) or (need.gpus and shape.gpu_type != gpu_type):
            continue
        room = shape.part(need.gpus > 0)
        if room.cores <= EPS:
            continue
        if best is None or (room.gpus, room.cores, room.memory_gib) > (best[1].gpus, best[1].cores, best[1].memory_gib):
            best = (shape, room)
    return best
