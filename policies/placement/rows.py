"""Capacity rows of the placement model as typed keys: what a row limits, where, and for whom.

One row per limit the solver keeps: the slots of a node shape (whole pods on whole nodes: a cloud instance
type, or the hosts of one shape in a datacenter zone), cores, memory and GPUs of a datacenter privacy zone,
a vCPU quota family, the max_nodes of an instance type. The solver builds them, its infeasibility diagnosis and the plan's
explanations read them. Pure.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from infra.dataflow import effective_tier
from infra.spec import CloudSite, Datacenter, Environment, Pipeline, PrivacyTier
from policies.placement import candidates as cand
from policies.placement import shapes


class RowKind(str, Enum):
    GPU = "gpu"
    CPU = "cpu"
    MEMORY = "memory"
    QUOTA = "quota"
    MAX_NODES = "max_nodes"
    SLOTS = "slots"


UNITS = {RowKind.GPU: "GPUs", RowKind.CPU: "cores", RowKind.MEMORY: "GiB", RowKind.QUOTA: "vCPUs",
         RowKind.MAX_NODES: "nodes", RowKind.SLOTS: "nodes"}


@dataclass(frozen=True)
class CapacityRow:
    """A capacity limit. Exactly one of the scope fields says which part of the site it covers:

    - `gpu_type` (+ `instance_types` for a subset of that type's instances): GPU rows, and the cores
      and memory of one GPU type's cloud nodes;
    - `cpu_nodes`: cores and memory of a cloud site's CPU-only nodes (replicas without GPUs, data stores);
    - `zone`: a datacenter privacy zone (its cores, memory, and GPUs per `gpu_type`);
    - `family`: an on-demand vCPU quota family; `instance_type`: that type's max_nodes.

    Slot rows (whole pods on whole nodes, `shapes`) name their nodes by `instance_type` (cloud) or `zone`
    and `host_shape` (datacenter), and their part by `gpu_type` (GPU pods) or `cpu_nodes` (other pods).
    """

    kind: RowKind
    site: str
    gpu_type: str | None = None
    instance_types: tuple[str, ...] = ()
    cpu_nodes: bool = False
    zone: PrivacyTier | None = None
    family: str | None = None
    instance_type: str | None = None
    host_shape: str | None = None

    def __str__(self) -> str:
        """A stable, readable name (`gpu|aws-use1|H100`); also the order rows are reported in."""
        if self.kind is RowKind.SLOTS:
            where = self.instance_type or f"{self.zone.value if self.zone else ''}/{self.host_shape}"
            return f"slots|{self.site}|{where}|{self.gpu_type or 'cpu'}"
        if self.kind is RowKind.QUOTA:
            what = self.family
        elif self.kind is RowKind.MAX_NODES:
            what = self.instance_type
        elif self.kind is RowKind.GPU:
            assert self.gpu_type is not None  # GPU rows always name their GPU type
            what = self.gpu_type + (f"@{'+'.join(self.instance_types)}" if self.instance_types else "")
            if self.zone is not None:
                return f"gpu|{self.site}|{what}|{self.zone.value}"
        elif self.zone is not None:
            what = self.zone.value
        else:
            what = "nodes" if self.cpu_nodes else f"{self.gpu_type}-nodes"
        return f"{self.kind.value}|{self.site}|{what}"

    def __lt__(self, other: CapacityRow) -> bool:
        return str(self) < str(other)

    @property
    def ties_nodes_only(self) -> bool:
        """Cloud node rows (bound 0) only tie replicas to the nodes bought; they limit nothing."""
        return self.kind in (RowKind.GPU, RowKind.CPU, RowKind.MEMORY, RowKind.SLOTS) and self.zone is None

    def concerns(self, env: Environment, p: Pipeline) -> bool:
        """Does this limit constrain where pipeline `p` can go?"""
        if self.zone is not None:
            site = env.site(self.site)
            if isinstance(site, Datacenter):
                home = cand.datacenter_capacity(site).home.get(effective_tier(env, p).rank)
                if home is None or list(PrivacyTier)[home] != self.zone:
                    return False
        if self.kind is RowKind.SLOTS:
            key = self.instance_type or f"{self.zone.value if self.zone else ''}/{self.host_shape}"
            site = env.site(self.site)
            return any(part.shape.key == key and part.gpu == (self.gpu_type is not None)
                       for part in shapes.site_packing(env, site).fits.get(p.name, []))
        if self.kind is RowKind.GPU:
            return p.gpu is not None and p.gpu.type == self.gpu_type
        if self.kind in (RowKind.CPU, RowKind.MEMORY):
            if self.zone is not None:
                return True
            if self.cpu_nodes:
                return not p.gpu
            return p.gpu is not None and p.gpu.type == self.gpu_type
        site = env.site(self.site)
        assert isinstance(site, CloudSite)  # max_nodes and quota rows exist for cloud sites only
        if self.kind is RowKind.MAX_NODES:
            it = next(i for i in site.instance_types if i.name == self.instance_type)
            return (it.gpu.type == p.gpu.type) if (it.gpu and p.gpu) else (not it.gpu and not p.gpu)
        return any(i.quota_family == self.family and ((i.gpu and p.gpu and i.gpu.type == p.gpu.type)
                                                      or (not i.gpu and not p.gpu))
                   for i in site.instance_types)

    @property
    def _pods(self) -> str:
        """Which pods a slot row is for."""
        return f"{self.gpu_type} GPU pods" if self.gpu_type else "non-GPU pods"

    @property
    def label(self) -> str:
        """What is used up, as the plan's explanations say it ("H100 GPUs", "CPU cores (zone pii)")."""
        if self.kind is RowKind.SLOTS:
            pods = self._pods
            return (f"{self.instance_type} nodes" if self.instance_type
                    else f"{self.host_shape} hosts for {pods} (zone {self.zone.value if self.zone else '?'})")
        if self.kind is RowKind.GPU:
            label = (f"{self.gpu_type} GPUs on {', '.join(self.instance_types)}" if self.instance_types
                     else f"{self.gpu_type} GPUs")
        elif self.kind is RowKind.QUOTA:
            label = f"{self.family} vCPU quota"
        elif self.kind is RowKind.MAX_NODES:
            label = f"max_nodes of {self.instance_type}"
        elif self.zone is not None:
            label = ("CPU cores" if self.kind is RowKind.CPU else "memory") + f" (zone {self.zone.value})"
        elif self.cpu_nodes:
            label = f"{self.kind.value} of CPU nodes"
        else:
            label = f"{self.kind.value} of {self.gpu_type} nodes"
        if self.kind is RowKind.GPU and self.zone is not None:
            label += f" (zone {self.zone.value})"
        return label

    @property
    def shortage_label(self) -> str:
        """What falls short, as an infeasible spec's reason says it ("H100 GPU capacity in racks of ...")."""
        if self.kind is RowKind.SLOTS:
            pods = self._pods
            return (f"{self.instance_type} nodes for {pods}" if self.instance_type
                    else f"{self.host_shape} hosts for {pods} in racks of privacy zone {self.zone.value if self.zone else '?'}")
        if self.kind is RowKind.GPU:
            assert self.gpu_type is not None  # GPU rows always name their GPU type
            what = self.gpu_type + (f"@{'+'.join(self.instance_types)}" if self.instance_types else "")
            label = f"{what} GPU capacity"
        elif self.kind is RowKind.QUOTA:
            label = f"on-demand {self.family} vCPU quota"
        elif self.kind is RowKind.MAX_NODES:
            label = f"max_nodes of {self.instance_type}"
        elif self.zone is not None:
            label = "CPU capacity" if self.kind is RowKind.CPU else "memory capacity"
        elif self.cpu_nodes:
            label = f"{self.kind.value} on cloud CPU nodes"
        else:
            label = f"{self.kind.value} on cloud {self.gpu_type} GPU nodes"
        if self.zone is not None and self.kind is RowKind.GPU:
            label += f" in racks of privacy zone {self.zone.value}"
        return label

    @property
    def unit(self) -> str:
        return UNITS[self.kind]
