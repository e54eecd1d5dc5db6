"""The placement plan: what runs where, and why. Serialisable to JSON.

Downstream rooms (clusters/, workloads/, policy checks) read only this and the spec.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Plain(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Explanation(_Plain):
    summary: str
    chosen: list[str] = Field(default_factory=list)
    rejected: dict[str, str] = Field(default_factory=dict, description="site -> why it runs no replica")
    binding: list[str] = Field(default_factory=list, description="constraints that are tight for this decision")


class PipelinePlacement(_Plain):
    name: str
    engine: str
    privacy_tier: str = Field(description="the tier it runs at: its own, raised by the data it reads (infra/dataflow.py)")
    declared_privacy_tier: str | None = Field(default=None, description="the spec's own tier, where data flow raised it")
    replicas: dict[str, int] = Field(description="site -> replicas (only sites with replicas)")
    routing: dict[str, dict[str, float]] = Field(description="user region -> site -> share of that region's demand")
    latency_ms: dict[str, dict[str, float]] = Field(description="user region -> site -> RTT + service time")
    slo_p99_ms: float
    failover: dict[str, list[str]] = Field(description="user region -> placed sites ordered by RTT")
    gpus: dict[str, int] = Field(default_factory=dict, description="site -> GPUs held")
    cost_usd_per_hour: float
    explanation: Explanation

    @property
    def total_replicas(self) -> int:
        return sum(self.replicas.values())


class DataPlacement(_Plain):
    name: str
    kind: str = Field(description="feature_view | collection")
    privacy_tier: str
    sites: list[str]
    serves: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="pipeline -> pipeline site -> data site it reads from")


class NodeGroup(_Plain):
    """Identical nodes of a site and the pods the plan puts on them (whole pods on whole nodes)."""

    shape: str = Field(description="cloud: instance type; datacenter: '<zone>/<cores>c-<GiB>GiB[-<n>x<GPU>]' (raw host)")
    nodes: int = Field(description="cloud: nodes bought; datacenter: hosts of this shape in the zone")
    gpu_type: str | None = None
    gpus: int = Field(default=0, description="per node")
    cores: float = Field(default=0, description="per node, kept for pods (allocatable)")
    memory_gib: float = Field(default=0, description="per node, kept for pods (allocatable)")
    gpu_pod_cores: float = Field(default=0, description="datacenter GPU hosts: the cores GPU pods may use; the rest is for other pods")
    gpu_pod_memory_gib: float = 0
    pods: dict[str, int] = Field(default_factory=dict, description="pipeline or data key ('feature_view:x') -> pods here")


class SitePlan(_Plain):
    name: str
    kind: str
    pipelines: dict[str, int] = Field(default_factory=dict, description="pipeline -> replicas")
    data: list[str] = Field(default_factory=list)
    gpus_used: dict[str, int] = Field(default_factory=dict)
    gpus_capacity: dict[str, int] = Field(default_factory=dict)
    cores_used: float = 0
    cores_capacity: float = 0
    memory_gib_used: float = 0
    memory_gib_capacity: float = 0
    nodes: dict[str, int] = Field(default_factory=dict, description="cloud: instance type -> node count")
    cost_usd_per_hour: float = 0
    node_groups: list[NodeGroup] = Field(
        default_factory=list, description="per node shape, the pods placed on it (packs by first-fit decreasing)")


class Baseline(_Plain):
    name: str
    feasible: bool
    cost_usd_per_hour: float | None
    note: str = ""


class BatchSitePlacement(_Plain):
    """One site's share of a batch pipeline's run: a RayCluster (one head, its workers) and the items it processes."""

    site: str
    kind: str
    workers: int
    worker_groups: dict[str, int] = Field(description="capacity type (own | on-demand | spot) -> workers")
    items: int = Field(description="items of one run processed here (in proportion to the worker-hours)")
    worker_hours: float
    hours: float = Field(description="hours one run takes here")
    cost_usd: float = Field(description="one run here: worker-hours at the price of their room, and the head")
    usd_per_hour: float = Field(description="while a run is going")
    capacity: dict[str, int] = Field(description="where the workers go (headroom bin or new nodes) -> workers")
    head: str = Field(description="where the head goes")


class BatchPlacement(_Plain):
    """Where a batch pipeline runs and why: the batch stage's decision (policies/placement/batch.py)."""

    name: str
    engine: str
    privacy_tier: str
    items: int
    window_hours: float = Field(description="hours a run may take: the deadline, or the time between two runs")
    deadline_hours: float | None = None
    schedule: str | None = None
    needed_items_per_s: float
    planned_items_per_s: float
    workers: int
    finish_hours: float
    cost_usd_per_run: float
    sites: list[BatchSitePlacement]
    explanation: Explanation

    def site(self, name: str) -> BatchSitePlacement | None:
        return next((s for s in self.sites if s.site == name), None)


class BatchNodes(_Plain):
    """New cloud nodes the batch stage buys while runs are going (on top of the online plan's)."""

    site: str
    instance_type: str
    capacity_type: str = Field(description="on-demand | spot")
    nodes: int
    usd_per_hour: float


class BatchPlan(_Plain):
    """The second stage: batch pipelines on what the online plan leaves (datacenter headroom, new cloud nodes)."""

    status: str
    solve_seconds: float
    solver: str
    pipelines: list[BatchPlacement] = Field(default_factory=list)
    nodes: list[BatchNodes] = Field(default_factory=list)

    def pipeline(self, name: str) -> BatchPlacement:
        return next(p for p in self.pipelines if p.name == name)

    def at(self, site: str) -> list[tuple[BatchPlacement, BatchSitePlacement]]:
        """The batch pipelines with workers at `site`, with their share there."""
        return [(p, s) for p in self.pipelines for s in p.sites if s.site == site]

    def nodes_at(self, site: str) -> list[BatchNodes]:
        return [n for n in self.nodes if n.site == site]


class PlacementPlan(_Plain):
    environment: str
    status: str
    cost_usd_per_hour: float
    lp_bound_usd_per_hour: float
    dual_bound_usd_per_hour: float
    gap_to_lp: float = Field(description="(cost - LP relaxation bound) / cost")
    solve_seconds: float
    solver: str
    sites: list[SitePlan]
    pipelines: list[PipelinePlacement]
    data: list[DataPlacement]
    baselines: list[Baseline] = Field(default_factory=list)
    batch: BatchPlan | None = Field(default=None, description="batch pipelines (second stage); none in older plan files")

    def site(self, name: str) -> SitePlan:
        return next(s for s in self.sites if s.name == name)

    def pipeline(self, name: str) -> PipelinePlacement:
        return next(p for p in self.pipelines if p.name == name)

    def used_sites(self) -> list[str]:
        batch = {s.site for p in self.batch.pipelines for s in p.sites} if self.batch else set()
        return [s.name for s in self.sites if s.pipelines or s.data or s.name in batch]

    def site_sizes(self) -> dict[str, int]:
        """How much each site deploys (pipelines plus data pieces): orders site stacks biggest first."""
        return {s.name: len(s.pipelines) + len(s.data) + len(self.batch.at(s.name) if self.batch else []) for s in self.sites}

    def decisions(self) -> dict[str, Any]:
        """The decision itself, without timings: equal for equal inputs."""
        # a plan without batch work keeps the digest it had before the batch stage existed
        batch: Any = {"solve_seconds"} if self.batch is not None else True
        data = self.model_dump(exclude={"solve_seconds": True, "baselines": True, "batch": batch})
        return data

    def digest(self) -> str:
        """A short fingerprint of the decision: the stacks of a sharded environment export it, and the
        fleet stack refuses to publish a directory whose sites were deployed from different plans."""
        import hashlib
        import json

        blob = json.dumps(self.decisions(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
