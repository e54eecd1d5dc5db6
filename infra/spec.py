"""The typed environment spec: one description of a hybrid fleet.

Every model forbids unknown keys, so a typo in a spec file is an error that
names the field instead of a silently ignored setting. Defaults are stated in
each field's description. Cross-file references (site names, GPU types, RTTs,
...) are checked in `infra.references`, which reports every problem at once.
"""
from __future__ import annotations

import ipaddress
from enum import Enum
from functools import cached_property
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from infra import limits

# Batch pipelines (`batch:`, infra.batch), re-exported: the loader suggests field names from this module's models.
from infra.batch import BatchPipeline, BatchSize, BatchWork, CpuBatchEngine, Throughput, VllmBatchEngine, WorkerResources  # noqa: F401
from infra.downgrade import Downgrade

# The feature views' Feast models (entities, features, batch source) live in infra.features; re-exported.
from infra.features import (  # noqa: F401
    DEPENDENCY_RTT_BUDGET_MS,
    FEATURE_LOOKUP_P99_MS,
    FeatureEntity,
    FeatureField,
    FeatureSource,
    StreamSource,
)
from infra.model import StrictModel

# Re-exported: the spec's models live here too (the loader suggests field names from this module's models).
from infra.objectives import (  # noqa: F401
    AbMetricDelta,
    ModeratorFlagRate,
    PredictionDrift,
    QualityObjective,
    ShadowDisagreement,
)
from infra.objectstore import ObjectStore

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Name = Annotated[str, Field(pattern=DNS_LABEL, min_length=1, max_length=40)]
# Every float is finite (StrictModel) and at most limits.MAX_QUANTITY; counts have their own bounds (infra/limits.py).
PositiveFloat = Annotated[float, Field(gt=0, le=limits.MAX_QUANTITY)]
NonNegativeFloat = Annotated[float, Field(ge=0, le=limits.MAX_QUANTITY)]
Cores = Annotated[int, Field(ge=1, le=limits.MAX_CORES)]


class PrivacyTier(str, Enum):
    """Data sensitivity of a pipeline or data set, from least to most sensitive."""

    public = "public"
    internal = "internal"
    pii = "pii"
    restricted = "restricted"

    @property
    def rank(self) -> int:
        return _TIER_ORDER.index(self)

    @property
    def is_sensitive(self) -> bool:
        """pii and restricted data stay in own datacenters unless a site opts in."""
        return self.rank >= PrivacyTier.pii.rank


_TIER_ORDER = [PrivacyTier.public, PrivacyTier.internal, PrivacyTier.pii, PrivacyTier.restricted]


# --------------------------------------------------------------------------- demand side


class UserRegion(StrictModel):
    """Where traffic comes from."""

    name: Name
    jurisdiction: str = Field(description="Legal jurisdiction of the users (e.g. US, EU); pii/restricted "
                              "requests from here are served only by sites of the same jurisdiction.")
    description: str = ""


# --------------------------------------------------------------------------- sites


class GpuShape(StrictModel):
    type: str = Field(description="GPU type name used across the spec, e.g. H100, A100, L4.")
    count: Annotated[int, Field(ge=1, le=16)]
    memory_gib: PositiveFloat = Field(default=80, description="Memory per GPU in GiB. Default 80.")


CapacityType = Literal["on-demand", "spot", "reserved"]


class InstanceType(StrictModel):
    """A cloud instance type a region offers, with its price and how many we may run."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
    vcpus: Cores
    memory_gib: PositiveFloat
    gpu: GpuShape | None = Field(default=None, description="GPUs per instance; none for CPU instance types.")
    hourly_usd: PositiveFloat = Field(description="On-demand price per instance-hour.")
    max_nodes: Annotated[int, Field(ge=0, le=limits.MAX_COUNT)] | None = Field(
        default=None, description="Cap on instances of this type (capacity reservation / availability). Default: only the quota limits.")
    capacity_types: list[CapacityType] = Field(
        default_factory=lambda: list[CapacityType](["on-demand"]), description="Karpenter capacity types. Default on-demand.")

    @property
    def quota_family(self) -> str:
        """AWS vCPU quota bucket: P and G instances have their own; the rest are 'standard'."""
        first = self.name[0]
        if first == "p":
            return "P"
        if first in ("g",):
            return "G"
        return "standard"


class CloudSite(StrictModel):
    """A cloud region that can run GPU (and CPU) node pools."""

    kind: Literal["cloud"] = "cloud"
    name: Name
    provider: Literal["aws"] = "aws"
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    zones: list[str] = Field(min_length=1)
    jurisdiction: str
    privacy_tiers: list[PrivacyTier] = Field(
        default_factory=lambda: [PrivacyTier.public, PrivacyTier.internal],
        description="Tiers this site may hold. Default public+internal: pii/restricted only where listed explicitly.")
    instance_types: list[InstanceType] = Field(min_length=1)
    vcpu_quotas: dict[Literal["P", "G", "standard"], Annotated[int, Field(ge=0, le=limits.MAX_COUNT)]] = Field(
        default_factory=dict, description="On-demand vCPU Service Quotas per family. Missing family: unlimited.")
    kubernetes_version: str = Field(default="1.33", pattern=r"^1\.\d+$")
    vpc_cidr: str = Field(description="VPC IPv4 block, /16-/28. Required (no default: the old one, 10.0.0.0/16, was every region's); "
                          "overlaps no other VPC nor datacenter network (infra.bounds): data stores admit readers by it.")
    api_allowed_cidrs: list[str] = Field(
        default_factory=list, description="CIDRs allowed to reach a public EKS endpoint. Default: private endpoint only.")

    @field_validator("vpc_cidr", "api_allowed_cidrs")
    @classmethod
    def _cidr(cls, value: str | list[str]) -> str | list[str]:
        for v in [value] if isinstance(value, str) else value:
            ipaddress.ip_network(v)
        return value

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc(cls, value: str) -> str:
        net = ipaddress.ip_network(value)
        if not isinstance(net, ipaddress.IPv4Network) or not 16 <= net.prefixlen <= 28:
            raise ValueError(f"{value} must be an IPv4 block between /16 and /28 (the sizes an AWS VPC may have)")
        return value

    @property
    def gpu_types(self) -> set[str]:
        return {it.gpu.type for it in self.instance_types if it.gpu}


class HostPool(StrictModel):
    """`count` identical hosts, named and addressed in sequence."""

    count: Annotated[int, Field(ge=1, le=512)]
    name_prefix: Name
    first_address: ipaddress.IPv4Address
    cores: Cores
    memory_gib: PositiveFloat
    gpu: GpuShape | None = None

    @model_validator(mode="after")
    def _addresses_fit(self) -> Self:
        first = int(self.first_address)
        last = first + self.count - 1
        if last > limits.LAST_IPV4:
            raise ValueError(f"{self.count} hosts from first_address {self.first_address} run past 255.255.255.255 "
                             f"(at most {limits.LAST_IPV4 - first + 1} fit)")
        why = limits.unusable_addresses(first, last)
        if why:
            raise ValueError(f"addresses {self.first_address}..{ipaddress.IPv4Address(last)}: {why}")
        return self


class Host(StrictModel):
    name: Name
    address: ipaddress.IPv4Address
    cores: Cores
    memory_gib: PositiveFloat
    gpu: GpuShape | None = None
    role: Literal["worker", "control-plane"] = "worker"
    ssh_port: Annotated[int, Field(ge=1, le=65535)] = 22

    @field_validator("address")
    @classmethod
    def _host_address(cls, value: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
        why = limits.unusable_addresses(int(value), int(value))
        if why:
            raise ValueError(why)
        return value


class Rack(StrictModel):
    """A rack: a failure domain with one privacy zone."""

    name: Name
    privacy_zone: PrivacyTier = Field(
        default=PrivacyTier.internal, description="Most sensitive tier this rack's network zone may hold. Default internal.")
    hosts: list[Host] = Field(default_factory=list)
    host_pools: list[HostPool] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.hosts and not self.host_pools:
            raise ValueError("a rack needs at least one entry in hosts or host_pools")
        return self

    def all_hosts(self) -> list[Host]:
        """Explicit hosts followed by the expanded pools, in spec order."""
        return self._expanded_hosts

    @cached_property
    def _expanded_hosts(self) -> list[Host]:
        out = list(self.hosts)
        for pool in self.host_pools:
            for i in range(pool.count):
                out.append(Host(name=f"{pool.name_prefix}{i + 1:02d}", address=pool.first_address + i,
                                cores=pool.cores, memory_gib=pool.memory_gib, gpu=pool.gpu))
        return out


class MarginalCost(StrictModel):
    """Own hardware is paid for: placement charges only what one more hour costs (power, cooling, ops)."""

    core_hour_usd: NonNegativeFloat = 0.004
    memory_gib_hour_usd: NonNegativeFloat = 0.0002
    gpu_hour_usd: dict[str, NonNegativeFloat] = Field(default_factory=dict)


class Datacenter(StrictModel):
    """An own datacenter: racks of hosts joined to one Kubernetes cluster."""

    kind: Literal["datacenter"] = "datacenter"
    name: Name
    jurisdiction: str
    country: str = Field(pattern=r"^[A-Z]{2}$")
    network_zone: str = Field(description="Routing domain / WAN zone of the datacenter.")
    privacy_tiers: list[PrivacyTier] | None = Field(
        default=None, description="Tiers this site may hold. Default: every tier up to its most sensitive rack zone.")
    racks: list[Rack] = Field(min_length=1)
    marginal_cost: MarginalCost = Field(default_factory=MarginalCost)
    system_reserved_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.1, description="Share of each host kept for the OS, kubelet and daemons. Default 0.1.")
    max_fail_percentage: Annotated[int, Field(ge=0, le=100)] = Field(
        default=20, description="Ansible rolling bootstrap: abort later racks once this share of a batch failed. Default 20.")
    kubernetes_api: str | None = Field(default=None, description="API server URL; credentials come from stack secrets.")
    object_store: ObjectStore | None = Field(default=None, description="Own S3-compatible store `{endpoint: https://..., bucket}` "
                                             "for the Flink state of pii/restricted views (infra/objectstore.py). Default: a PVC.")

    @property
    def allowed_tiers(self) -> list[PrivacyTier]:
        if self.privacy_tiers is not None:
            return list(self.privacy_tiers)
        top = max(r.privacy_zone.rank for r in self.racks)
        return _TIER_ORDER[: top + 1]

    def all_hosts(self) -> list[tuple[Rack, Host]]:
        return self._rack_hosts

    @cached_property
    def _rack_hosts(self) -> list[tuple[Rack, Host]]:
        return [(rack, host) for rack in self.racks for host in rack.all_hosts()]


Site = Annotated[CloudSite | Datacenter, Field(discriminator="kind")]


# --------------------------------------------------------------------------- network


class Network(StrictModel):
    """Round-trip times in milliseconds. Site pairs may be given in one direction only."""

    user_rtt_ms: dict[str, dict[str, NonNegativeFloat]] = Field(
        description="user region -> site -> RTT ms; every pair is required.")
    site_rtt_ms: dict[str, dict[str, NonNegativeFloat]] = Field(
        default_factory=dict, description="site -> site -> RTT ms; every unordered pair of distinct sites is required.")
    intra_site_rtt_ms: NonNegativeFloat = Field(default=0.5, description="RTT inside one site. Default 0.5 ms.")


# --------------------------------------------------------------------------- data dependencies


class FeatureView(StrictModel):
    """A Feast feature view served from the Redis online store of the sites that need it."""

    name: Name
    entities: list[FeatureEntity] = Field(
        min_length=1, max_length=8, description="Keys of the view: `{name, join_key, value_type}` or a bare name (int64 key).")
    privacy_tier: PrivacyTier = PrivacyTier.internal
    ttl_seconds: Annotated[int, Field(ge=0, le=limits.MAX_TTL_SECONDS)] = 86400
    online_memory_gib: PositiveFloat = Field(default=4, description="Redis memory per site replica. Default 4 GiB.")
    online_cpu: PositiveFloat = Field(default=1, description="Redis cores per site replica. Default 1.")
    streaming: bool = Field(default=False, description="Ingest from a stream with a Flink job. Default false.")
    stream: StreamSource | None = Field(
        default=None, description="Streaming views: the Kafka topic the Flink job reads (`{bootstrap_servers, topic}`). "
        "Default: topic features.<view> on the site's Kafka.")
    features: list[FeatureField] = Field(
        default_factory=list, max_length=4096,
        description="Features with their types (`{name, dtype, length}`). Default none: `feast apply` infers them from the source.")
    source: FeatureSource | None = Field(
        default=None, description="Batch source (parquet). Default: <feature source base>/<env>/<view>.parquet, event_timestamp.")
    entity_count: Annotated[int, Field(ge=1, le=10**12)] | None = Field(
        default=None, description="Entities held online per site; with features, checked against online_memory_gib. Default unknown.")
    feature_lookup_p99_ms: PositiveFloat = Field(
        default=FEATURE_LOOKUP_P99_MS, description="Server-side p99 of one online lookup; placement adds it to the RTT of "
        f"every dependency on the view. Default {FEATURE_LOOKUP_P99_MS:g} ms (measured, scripts/bench_feast.py).")

    @field_validator("entities", mode="before")
    @classmethod
    def _bare_entity_names(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


class VectorCollection(StrictModel):
    """A Qdrant collection."""

    name: Name
    dimensions: Annotated[int, Field(ge=1, le=65536)]
    distance: Literal["Cosine", "Dot", "Euclid", "Manhattan"] = "Cosine"
    privacy_tier: PrivacyTier = PrivacyTier.internal
    memory_gib: PositiveFloat = 8
    cpu: PositiveFloat = 2
    replication_factor: Annotated[int, Field(ge=1, le=5)] = 2
    shards: Annotated[int, Field(ge=1, le=64)] = 2


class Dependency(StrictModel):
    """A data piece a pipeline reads on its hot path, with the RTT it may cost."""

    feature_view: Name | None = None
    collection: Name | None = None
    latency_budget_ms: PositiveFloat = Field(
        default=DEPENDENCY_RTT_BUDGET_MS, description="Max time of one read on the hot path: RTT pipeline site -> data "
        f"site, plus for a feature view its feature_lookup_p99_ms. Default {DEPENDENCY_RTT_BUDGET_MS:g} ms; for a feature "
        f"view {DEPENDENCY_RTT_BUDGET_MS:g} ms + the default lookup p99 ({DEPENDENCY_RTT_BUDGET_MS + FEATURE_LOOKUP_P99_MS:g} ms).")
    downgrade: Downgrade | None = Field(default=None, description="`{to, reason}`: the reads count at tier `to` (infra/dataflow.py). "
                                        "Default none: the reader runs at the highest tier it reads, on sites allowed it.")

    @model_validator(mode="before")
    @classmethod
    def _feature_view_budget(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("feature_view") is not None and "latency_budget_ms" not in data:
            return {**data, "latency_budget_ms": DEPENDENCY_RTT_BUDGET_MS + FEATURE_LOOKUP_P99_MS}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.feature_view is None) == (self.collection is None):
            raise ValueError("set exactly one of feature_view or collection")
        return self

    @property
    def target(self) -> str:
        return self.feature_view or self.collection  # type: ignore[return-value]

    @property
    def kind(self) -> str:
        return "feature_view" if self.feature_view else "collection"


# --------------------------------------------------------------------------- pipelines


class Speculative(StrictModel):
    model: str = Field(description="Draft model (or 'ngram') for speculative decoding.")
    num_speculative_tokens: Annotated[int, Field(ge=1, le=16)] = 5


class VllmEngine(StrictModel):
    kind: Literal["vllm"] = "vllm"
    tensor_parallel: Annotated[int, Field(ge=1, le=64)] = 1
    pipeline_parallel: Annotated[int, Field(ge=1, le=16)] = 1
    max_model_len: Annotated[int, Field(ge=256, le=limits.MAX_MODEL_LEN)] = 8192
    gpu_memory_utilization: Annotated[float, Field(gt=0.1, le=0.98)] = 0.9
    served_model_name: str | None = None
    speculative: Speculative | None = None
    allow_cross_node_tensor_parallel: bool = Field(
        default=False, description="Allow tensor_parallel above the GPUs of every node offering the GPU type (tensor "
        "parallelism over the network between nodes: slow). Default false: split across nodes with pipeline_parallel.")


class TritonEngine(StrictModel):
    kind: Literal["triton"] = "triton"
    model_format: Literal["onnx", "tensorrt", "pytorch", "tensorflow", "python"] = "onnx"
    max_batch_size: Annotated[int, Field(ge=1, le=limits.MAX_COUNT)] = 64
    canary_traffic_percent: Annotated[int, Field(ge=0, le=100)] | None = None


class CpuEngine(StrictModel):
    kind: Literal["cpu"] = "cpu"
    image: str = Field(description="Container image with an explicit tag or digest.")
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    args: list[str] = Field(default_factory=list)
    health_path: str = "/healthz"


Engine = Annotated[VllmEngine | TritonEngine | CpuEngine, Field(discriminator="kind")]


class GpuRequest(StrictModel):
    type: str
    count: Annotated[int, Field(ge=1, le=64)]


class Resources(StrictModel):
    """Per-replica requests (= limits)."""

    cpu: PositiveFloat
    memory_gib: PositiveFloat
    gpu: GpuRequest | None = None


class Latency(StrictModel):
    p99_ms: PositiveFloat = Field(description="End-to-end p99 budget: network RTT + service time.")
    service_ms: PositiveFloat = Field(description="The service-time part of p99_ms.")

    @model_validator(mode="after")
    def _service_within(self) -> Self:
        if self.service_ms >= self.p99_ms:
            raise ValueError(f"service_ms ({self.service_ms}) must be below p99_ms ({self.p99_ms}): "
                             "nothing would be left for the network")
        return self

    @property
    def network_budget_ms(self) -> float:
        return self.p99_ms - self.service_ms


class Spread(StrictModel):
    min_sites: Annotated[int, Field(ge=1, le=16)] = Field(default=1, description="Distinct sites. Default 1.")
    min_replicas_per_site: Annotated[int, Field(ge=1, le=limits.MAX_REPLICAS)] = Field(
        default=1, description="Replicas wherever the pipeline runs at all. Default 1 (2 keeps a site up across a zone loss).")
    zone_max_skew: Annotated[int, Field(ge=1, le=limits.MAX_REPLICAS)] = Field(default=1, description="Topology spread over zones/racks. Default 1.")


class Autoscaling(StrictModel):
    max_replicas_factor: Annotated[float, Field(ge=1, le=100)] = Field(
        default=2.0, description="max replicas = factor x planned replicas. Default 2.")
    scale_to_zero: bool = False
    target_queue_depth: Annotated[int, Field(ge=1, le=limits.MAX_COUNT)] = 8


class Variant(StrictModel):
    name: Name
    model: str
    weight: Annotated[int, Field(ge=0, le=100)]


class Shadow(StrictModel):
    target: Name = Field(description="Pipeline that receives a mirror of this pipeline's requests.")
    percent: Annotated[float, Field(gt=0, le=100)] = 100


class Pipeline(StrictModel):
    """One inference pipeline: a model behind the gateway, placed by the solver."""

    name: Name
    description: str = ""
    engine: Engine
    model: str = Field(description="Model artifact: hub id or storage URI.")
    resources: Resources
    capacity_rps: PositiveFloat = Field(description="Peak requests/s one replica sustains within service_ms.")
    target_utilization: Annotated[float, Field(gt=0, le=1)] = Field(default=0.7, description="Headroom. Default 0.7.")
    demand_rps: dict[str, NonNegativeFloat] = Field(description="Peak requests/s per user region.")
    latency: Latency
    privacy_tier: PrivacyTier = PrivacyTier.internal
    allowed_jurisdictions: list[str] | None = Field(
        default=None, description="pii/restricted: where requests may be served. Default: the user region's own.")
    min_replicas: Annotated[int, Field(ge=0, le=limits.MAX_REPLICAS)] = 1
    spread: Spread = Field(default_factory=Spread)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    dependencies: list[Dependency] = Field(default_factory=list)
    variants: list[Variant] = Field(default_factory=list)
    shadow: Shadow | None = None
    pinned_sites: list[Name] | None = Field(
        default=None, description="Restrict placement to these sites (an operator override). Default: any allowed site.")
    availability: Annotated[float, Field(ge=0.95, lt=1)] = Field(
        default=0.995, description="Share of requests answered without a server error over 30 days; the error-budget "
        "burn-rate alerts use it. Default 0.995.")
    quality: list[QualityObjective] = Field(
        default_factory=list, description="Model-quality objectives beside latency (README, Quality objectives). Default none.")

    @property
    def gpu(self) -> GpuRequest | None:
        return self.resources.gpu

    @property
    def is_llm(self) -> bool:
        return self.engine.kind == "vllm"


# --------------------------------------------------------------------------- gateway


class TokenBudget(StrictModel):
    pipeline: Name
    tokens_per_minute: Annotated[int, Field(ge=1, le=limits.MAX_TOKENS_PER_MINUTE)]


DEFAULT_TENANT_REQUESTS_PER_SECOND = 100
MAX_TENANT_REQUESTS_PER_SECOND = 1_000_000
MAX_RATE_RULES = 16
"""Distinct `requests_per_second` values among tenants: one Envoy Gateway local rate-limit rule each (its CRD's maxItems)."""


class Tenant(StrictModel):
    """A caller of the entry gateways: it authenticates with its own API key (derived from the stack's secret seed;
    `hybridml tenant-key ENV TENANT` prints it), and its limits are keyed by that identity, never by a header it sends."""

    name: Name
    budgets: list[TokenBudget] = Field(default_factory=list, description="LLM token budgets per pipeline (tokens per "
                                       "minute, shared over the entry gateways). Default none: the tenant's LLM "
                                       "requests are limited by `requests_per_second` only.")
    requests_per_second: int = Field(
        default=DEFAULT_TENANT_REQUESTS_PER_SECOND, ge=1, le=MAX_TENANT_REQUESTS_PER_SECOND,
        description="Requests per second the tenant may send to one pipeline route (a pipeline for one user region) "
                    "through one entry gateway proxy, enforced by each Envoy replica on its own (Envoy Gateway local "
                    f"rate limit: 429 past it). Default {DEFAULT_TENANT_REQUESTS_PER_SECOND}.")


# --------------------------------------------------------------------------- root


class Environment(StrictModel):
    """A whole hybrid environment: `infra/environments/<name>.yaml`."""

    name: Name
    description: str = ""
    user_regions: list[UserRegion] = Field(min_length=1)
    sites: list[Site] = Field(min_length=1)
    network: Network
    feature_views: list[FeatureView] = Field(default_factory=list)
    collections: list[VectorCollection] = Field(default_factory=list)
    pipelines: list[Pipeline] = Field(min_length=1)
    tenants: list[Tenant] = Field(default_factory=list)
    batch: BatchWork = Field(default_factory=BatchWork, description="Batch inference pipelines on Ray and spot "
                             "prices for their workers (infra/batch.py). Default none.")

    # ---- lookups used everywhere downstream; cheap enough to recompute

    def site(self, name: str) -> CloudSite | Datacenter:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def cloud_sites(self) -> list[CloudSite]:
        return [s for s in self.sites if isinstance(s, CloudSite)]

    @property
    def datacenters(self) -> list[Datacenter]:
        return [s for s in self.sites if isinstance(s, Datacenter)]

    def pipeline(self, name: str) -> Pipeline:
        for p in self.pipelines:
            if p.name == name:
                return p
        raise KeyError(name)

    def site_rtt(self, a: str, b: str) -> float:
        if a == b:
            return self.network.intra_site_rtt_ms
        fwd = self.network.site_rtt_ms.get(a, {}).get(b)
        return fwd if fwd is not None else self.network.site_rtt_ms[b][a]

    def user_rtt(self, region: str, site: str) -> float:
        return self.network.user_rtt_ms[region][site]

    def region(self, name: str) -> UserRegion:
        for r in self.user_regions:
            if r.name == name:
                return r
        raise KeyError(name)

    def site_allows(self, site: CloudSite | Datacenter, tier: PrivacyTier) -> bool:
        tiers = site.allowed_tiers if isinstance(site, Datacenter) else site.privacy_tiers
        return tier in tiers

    def gpu_types(self) -> set[str]:
        out: set[str] = set()
        for s in self.sites:
            if isinstance(s, CloudSite):
                out |= s.gpu_types
            else:
                out |= {h.gpu.type for _, h in s.all_hosts() if h.gpu}
        return out
