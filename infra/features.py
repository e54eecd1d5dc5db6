"""What Feast needs to know about a feature view (`feature_views[]`): its entities (join keys and value types),
its features (names, types, value sizes), its batch source, and the measured lookup latency placement adds to
every dependency on it. The serving stack turns these into a Feast feature repository per view
(`workloads/render/feast_repo.py`).

Imported by `infra.spec` (the models) and `infra.references` (`check_feature_views`, the checks across the spec);
imports only `infra.model` (a view is seen through the `FeatureView` protocol, so this module and `infra.spec` do
not import each other).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, Protocol, Self

from pydantic import Field, model_validator

from infra.model import StrictModel

FEATURE_LOOKUP_P99_MS = 15.0
"""Server-side p99 of one online lookup request (Feast's feature server over Redis with Sentinel, 10 entities per
request, 500 lookups/s), the worst of the local and prod view shapes over three runs of scripts/bench_feast.py on the
2-core reference machine (README, "Feature lookups, measured"); the default of `feature_lookup_p99_ms`."""
DEPENDENCY_RTT_BUDGET_MS = 5.0
"""A dependency's default RTT allowance; a feature view's default budget adds its lookup p99 to it."""

# Feast types: spec name -> (feast.types expression, bytes of one value when `length` is not given).
DTYPES: dict[str, tuple[str, int]] = {
    "bool": ("Bool", 1), "int32": ("Int32", 4), "int64": ("Int64", 8), "float32": ("Float32", 4),
    "float64": ("Float64", 8), "string": ("String", 16), "bytes": ("Bytes", 16), "unix_timestamp": ("UnixTimestamp", 8),
    "int32_list": ("Array(Int32)", 4), "int64_list": ("Array(Int64)", 8), "float32_list": ("Array(Float32)", 4),
    "float64_list": ("Array(Float64)", 8), "string_list": ("Array(String)", 16), "bytes_list": ("Array(Bytes)", 16),
    "bool_list": ("Array(Bool)", 1),
}
DType = Literal["bool", "int32", "int64", "float32", "float64", "string", "bytes", "unix_timestamp",
                "int32_list", "int64_list", "float32_list", "float64_list", "string_list", "bytes_list", "bool_list"]
KeyType = Literal["int64", "int32", "string", "bytes"]
# A Python identifier in lower case: Feast names and the variables of the generated definitions file.
Identifier = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$", min_length=1, max_length=63)]

DEFAULT_LIST_LENGTH = 16
"""Elements of a list feature whose `length` is not given."""
# Redis bytes of one entity of a view (Feast keeps one hash per entity: a 4-byte hashed field per feature plus the
# view's timestamp field). Redis stores a small hash as a listpack, and as a hash table once a value is over 64 bytes
# or it has over 128 fields, at several times the cost per field. Fitted to `used_memory` after materializing 20,000
# entities of five shapes with the real-Feast rig (README, "Feature lookups, measured"): within 2 % for each.
LISTPACK_MAX_VALUE, LISTPACK_MAX_FIELDS = 64, 128
LISTPACK_ENTITY_BYTES, LISTPACK_FEATURE_BYTES = 270, 4
HASHTABLE_ENTITY_BYTES, HASHTABLE_FEATURE_BYTES = 360, 53
EXPIRY_BYTES = 40
"""A key with a TTL (`ttl_seconds` > 0) also has an entry in Redis's expiry table (estimated, not fitted)."""
MEMORY_HEADROOM = 0.8
"""Share of `online_memory_gib` (Redis maxmemory) the estimated rows may fill; the rest is replication buffers,
AOF rewrite and fragmentation."""


class FeatureEntity(StrictModel):
    """The key a feature view is looked up by. A bare string in `entities` is an entity of that name, key and int64."""

    name: Identifier
    join_key: Identifier | None = Field(default=None, description="Column of the key in sources and requests. Default: the name.")
    value_type: KeyType = Field(default="int64", description="Type of the key's values. Default int64.")

    @property
    def key(self) -> str:
        return self.join_key or self.name


class FeatureField(StrictModel):
    """One feature of a view, with its Feast type and the typical size of a value."""

    name: Identifier
    dtype: DType
    length: Annotated[int, Field(ge=1, le=65536)] | None = Field(
        default=None, description="Elements of a list feature, or bytes of a string/bytes value. "
        f"Default: {DEFAULT_LIST_LENGTH} elements for lists, 16 bytes for string/bytes; not allowed for other types.")

    @model_validator(mode="after")
    def _length_fits_the_type(self) -> Self:
        if self.length is not None and not self.sized:
            raise ValueError(f"length applies to list, string and bytes features, not {self.dtype}")
        return self

    @property
    def sized(self) -> bool:
        return self.dtype.endswith("_list") or self.dtype in ("string", "bytes")

    @property
    def value_bytes(self) -> int:
        """Bytes one value takes in Redis (serialized, without per-field overhead)."""
        unit = DTYPES[self.dtype][1]
        if self.dtype.endswith("_list"):
            elements = self.length or DEFAULT_LIST_LENGTH
            return elements * (unit if self.dtype not in ("string_list", "bytes_list") else unit + 2) + 4
        if self.dtype in ("string", "bytes"):
            return (self.length or unit) + 2
        return unit


class FeatureSource(StrictModel):
    """The batch source a view is materialized from (a parquet file or prefix on object storage)."""

    path: str = Field(pattern=r"^(s3|gs|file)://[^\s'\"\\]+$|^/[^\s'\"\\]*$",
                      description="Parquet URI: s3://, gs://, file:// or an absolute path.")
    timestamp_field: Identifier = Field(default="event_timestamp", description="Event time column. Default event_timestamp.")
    created_timestamp_field: Identifier | None = Field(
        default=None, description="Row creation time column, to break ties between rows of one event time. Default none.")


DEFAULT_STREAM_BOOTSTRAP = "hybridml-kafka-bootstrap.kafka.svc.cluster.local:9093"
"""The brokers a streaming view without `stream.bootstrap_servers` reads from: the site's Kafka, a Strimzi cluster
`hybridml` in namespace `kafka` (its TLS listener, 9093). An assumption of this project (README), like the fleet bucket
of Flink state; the NetworkPolicy `allow-stream-ingest` lets the Flink pods reach ports 9092/9093."""
BootstrapServer = Annotated[str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?:[0-9]{1,5}$")]


class StreamSource(StrictModel):
    """The stream a streaming view's Flink job reads (workloads/streaming): Kafka over TLS, one JSON object per record
    with the view's join keys, features and timestamp field (ISO 8601 or epoch seconds)."""

    bootstrap_servers: list[BootstrapServer] = Field(
        default_factory=lambda: [DEFAULT_STREAM_BOOTSTRAP], min_length=1, max_length=16,
        description=f"Kafka brokers, host:port (TLS). Default [{DEFAULT_STREAM_BOOTSTRAP}].")
    topic: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")] | None = Field(
        default=None, description="Kafka topic. Default features.<view name>.")

    def topic_of(self, view_name: str) -> str:
        return self.topic or f"features.{view_name}"


class FeatureView(Protocol):
    """What the estimate and the checks read of an `infra.spec.FeatureView`."""

    @property
    def name(self) -> str: ...
    @property
    def entities(self) -> Sequence[FeatureEntity]: ...
    @property
    def features(self) -> Sequence[FeatureField]: ...
    @property
    def source(self) -> FeatureSource | None: ...
    @property
    def streaming(self) -> bool: ...
    @property
    def stream(self) -> StreamSource | None: ...
    @property
    def entity_count(self) -> int | None: ...
    @property
    def online_memory_gib(self) -> float: ...
    @property
    def ttl_seconds(self) -> int: ...


def row_bytes(view: FeatureView) -> int:
    """Estimated Redis bytes of one entity of `view` (see the constants above)."""
    values = [f.value_bytes for f in view.features]
    table = any(v > LISTPACK_MAX_VALUE for v in values) or len(values) + 1 > LISTPACK_MAX_FIELDS
    entity, field = (HASHTABLE_ENTITY_BYTES, HASHTABLE_FEATURE_BYTES) if table else (LISTPACK_ENTITY_BYTES, LISTPACK_FEATURE_BYTES)
    return entity + sum(field + v for v in values) + (EXPIRY_BYTES if view.ttl_seconds else 0)


def check_feature_views(views: Sequence[FeatureView]) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems across the spec's `feature_views`: (path, message), paths from the spec's root."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    seen_entities: dict[str, tuple[str, FeatureEntity]] = {}
    for vi, view in enumerate(views):
        base: tuple[str | int, ...] = ("feature_views", vi)
        out += [(base + path, message) for path, message in _columns(view)]
        for ei, entity in enumerate(view.entities):
            first = seen_entities.setdefault(entity.name, (view.name, entity))
            if (first[1].key, first[1].value_type) != (entity.key, entity.value_type):
                out.append((base + ("entities", ei), f"entity {entity.name!r} is {entity.key}:{entity.value_type} here but "
                                                     f"{first[1].key}:{first[1].value_type} in view {first[0]!r}: one entity, one key"))
        if view.stream is not None and not view.streaming:
            out.append((base + ("stream",), "stream is read by the Flink job of a streaming view: set streaming: true or drop stream"))
        if view.entity_count is not None and not view.features:
            out.append((base + ("entity_count",), "entity_count needs features to size the rows (list the view's features)"))
        elif view.entity_count is not None:
            need = view.entity_count * row_bytes(view) / 2**30
            if need > view.online_memory_gib * MEMORY_HEADROOM:
                out.append((base + ("entity_count",),
                            f"{view.entity_count:,} entities of ~{row_bytes(view)} bytes need ~{need:.1f} GiB of Redis, more than "
                            f"{MEMORY_HEADROOM:.0%} of online_memory_gib ({view.online_memory_gib:g} GiB): raise online_memory_gib "
                            f"to at least {need / MEMORY_HEADROOM:.1f}"))
    return out


def _columns(view: FeatureView) -> list[tuple[tuple[str | int, ...], str]]:
    """Every column of a view (join keys, features, timestamp fields) needs its own name."""
    columns: list[tuple[str, tuple[str | int, ...]]] = [(e.key, ("entities", i)) for i, e in enumerate(view.entities)]
    columns += [(f.name, ("features", i, "name")) for i, f in enumerate(view.features)]
    if view.source is not None:
        columns.append((view.source.timestamp_field, ("source", "timestamp_field")))
        if view.source.created_timestamp_field:
            columns.append((view.source.created_timestamp_field, ("source", "created_timestamp_field")))
    out: list[tuple[tuple[str | int, ...], str]] = []
    first: dict[str, tuple[str | int, ...]] = {}
    for name, path in columns:
        if name in first:
            out.append((path, f"{_describe(path)} {name!r} is also the {_describe(first[name])} of view {view.name!r}: "
                              "every column of a view needs its own name"))
        else:
            first[name] = path
    return out


def _describe(path: tuple[str | int, ...]) -> str:
    return {"entities": "join key", "source": "timestamp field"}.get(str(path[0]), "feature")
