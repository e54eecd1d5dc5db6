"""The job's configuration: what the FlinkDeployment passes as arguments (workloads/render/flink.py writes them with
`JobConfig.to_args`), parsed back here. Standard library only (the job image carries this package and PyFlink).

A bad argument is a `ConfigError` naming the option and the reason; `job.main` prints it and exits 2.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

SCALARS = ("bool", "int32", "int64", "float32", "float64", "string")
"""Feature types the push path carries: JSON has no bytes, so `bytes`, `bytes_list` and `unix_timestamp` views are
refused at start (ConfigError) rather than pushed wrong."""
KEY_TYPES = ("int64", "int32", "string")
SOURCES = ("kafka", "synthetic")
KAFKA_STARTS = ("committed", "earliest", "latest")
"""Where a Kafka source starts: the group's committed offsets (else the latest: the cluster's job), or the earliest or
latest offsets of the topic."""
_CONF_KEY = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class ConfigError(ValueError):
    """A job argument that cannot work: `option` names it."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    length: int | None = None

    @property
    def is_list(self) -> bool:
        return self.dtype.endswith("_list")

    @property
    def element(self) -> str:
        return self.dtype.removesuffix("_list")

    def spec(self) -> str:
        return f"{self.name}:{self.dtype}" + (f":{self.length}" if self.length else "")


@dataclass(frozen=True)
class JobConfig:
    """Everything the job needs, all of it from the rendered FlinkDeployment's `job.args`."""

    feature_view: str                          # the spec's view name (logs, metrics)
    push_source: str                           # Feast PushSource of the view (workloads/render/feast_repo.push_source_name)
    feature_server: str                        # https://host[:port] of the view's Feast feature server
    keys: tuple[Column, ...]                   # join keys with their types
    features: tuple[Column, ...]
    timestamp_field: str = "event_timestamp"
    created_field: str | None = None           # filled with the ingest time when a record lacks it
    tls_ca: str | None = None                  # CA file the feature server's (and Kafka's) certificate is checked against
    tls_cert: str | None = None                # client certificate (and key) if the server asks for one
    tls_key: str | None = None
    source: str = "kafka"
    kafka_bootstrap_servers: tuple[str, ...] = ()
    kafka_topic: str | None = None
    kafka_group: str | None = None
    kafka_start: str = "committed"
    kafka_bounded: bool = False                # stop at the offsets that are the latest when the job starts
    kafka_timeout_ms: int = 60_000             # a Kafka call (metadata, topic description) waits this long for the brokers
    synthetic_rows: int = 1000                 # the local, bounded stream: rows, rows/s, first entity
    synthetic_rate: float = 100.0
    synthetic_first: int = 0
    flush_ms: int = 50                         # a buffered row waits at most this long for its push
    buffer_timeout_ms: int = 5                 # Flink's network buffers between tasks: sent when full or this old
    batch_rows: int = 200                      # ... or until this many rows are buffered
    push_slots: int = 1                        # buffers per push subtask (each flushes with its own push)
    push_retries: int = 4                      # tries after the first, exponential backoff from 100 ms
    parallelism: int | None = None
    flink_conf: tuple[tuple[str, str], ...] = ()
    """Flink configuration the job sets on its environment: a local run has no FlinkDeployment `flinkConfiguration`,
    so tools/flink_rig.py passes its checkpointing keys (and a restore path) this way. Empty in the cluster."""

    @property
    def columns(self) -> tuple[Column, ...]:
        return self.keys + self.features

    def to_args(self) -> list[str]:
        """The job's argument list (what the FlinkDeployment's `job.args` carry after `-pym workloads.streaming.job`)."""
        args = ["--feature-view", self.feature_view, "--push-source", self.push_source, "--feature-server", self.feature_server,
                "--keys", ",".join(c.spec() for c in self.keys), "--features", ",".join(c.spec() for c in self.features),
                "--timestamp-field", self.timestamp_field]
        optional: list[tuple[str, object]] = [
            ("--created-field", self.created_field), ("--tls-ca", self.tls_ca), ("--tls-cert", self.tls_cert),
            ("--tls-key", self.tls_key)]
        args += [w for opt, v in optional if v for w in (opt, str(v))]
        args += ["--source", self.source]
        if self.source == "kafka":
            args += ["--kafka-bootstrap-servers", ",".join(self.kafka_bootstrap_servers), "--kafka-topic", str(self.kafka_topic)]
            if self.kafka_group:
                args += ["--kafka-group", self.kafka_group]
            if self.kafka_start != "committed":
                args += ["--kafka-start", self.kafka_start]
            if self.kafka_bounded:
                args += ["--kafka-bounded"]
            if self.kafka_timeout_ms != 60_000:
                args += ["--kafka-timeout-ms", str(self.kafka_timeout_ms)]
        else:
            args += ["--synthetic-rows", str(self.synthetic_rows), "--synthetic-rate", f"{self.synthetic_rate:g}",
                     "--synthetic-first", str(self.synthetic_first)]
        args += ["--flush-ms", str(self.flush_ms), "--buffer-timeout-ms", str(self.buffer_timeout_ms), "--batch-rows",
                 str(self.batch_rows), "--push-slots", str(self.push_slots), "--push-retries", str(self.push_retries)]
        if self.parallelism:
            args += ["--parallelism", str(self.parallelism)]
        args += [w for key, value in self.flink_conf for w in ("--flink-conf", f"{key}={value}")]
        return args


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError("arguments", message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="workloads.streaming.job", add_help=False, allow_abbrev=False)
    for opt in ("--feature-view", "--push-source", "--feature-server", "--keys", "--features"):
        p.add_argument(opt, required=True)
    p.add_argument("--timestamp-field", default="event_timestamp")
    for opt in ("--created-field", "--tls-ca", "--tls-cert", "--tls-key", "--kafka-bootstrap-servers", "--kafka-topic",
                "--kafka-group"):
        p.add_argument(opt)
    p.add_argument("--source", default="kafka")
    p.add_argument("--kafka-start", default="committed")
    p.add_argument("--kafka-bounded", action="store_true")
    p.add_argument("--flink-conf", action="append", default=[])
    for opt, kind in (("--synthetic-rows", int), ("--synthetic-rate", float), ("--synthetic-first", int), ("--flush-ms", int), ("--buffer-timeout-ms", int),
                      ("--batch-rows", int), ("--push-slots", int), ("--push-retries", int), ("--parallelism", int),
                      ("--kafka-timeout-ms", int)):
        p.add_argument(opt, type=kind)
    return p


def _columns(option: str, text: str, types: tuple[str, ...], lists: bool) -> tuple[Column, ...]:
    if not text.strip():
        raise ConfigError(option, "none given: the job types every row by the spec's keys and features (a streaming view "
                                  "must list its features)")
    out = []
    for item in (t.strip() for t in text.split(",")):
        parts = item.split(":")
        if len(parts) not in (2, 3) or not _NAME.match(parts[0]):
            raise ConfigError(option, f"{item!r} is not name:type[:length] with a lower-case identifier as name")
        name, dtype = parts[0], parts[1]
        base = dtype.removesuffix("_list") if lists else dtype
        if base not in types:
            raise ConfigError(option, f"{name}: type {dtype!r} cannot be pushed as JSON (supported: {', '.join(types)}"
                                      + (" and their _list forms" if lists else "") + ")")
        length = None
        if len(parts) == 3:
            if not parts[2].isdigit() or int(parts[2]) < 1:
                raise ConfigError(option, f"{name}: length {parts[2]!r} is not a positive integer")
            length = int(parts[2])
        out.append(Column(name, dtype, length))
    names = [c.name for c in out]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(option, f"column(s) named twice: {', '.join(dup)}")
    return tuple(out)


def parse_args(argv: list[str]) -> JobConfig:
    """The job's arguments -> JobConfig; ConfigError naming the option on anything that cannot work."""
    a = _parser().parse_args(argv)
    url = urlsplit(a.feature_server)
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ConfigError("--feature-server", f"{a.feature_server!r} is not an http(s)://host[:port] URL")
    if url.scheme == "https" and not a.tls_ca:
        raise ConfigError("--tls-ca", "an https feature server needs the CA file its certificate is checked against")
    if bool(a.tls_cert) != bool(a.tls_key):
        raise ConfigError("--tls-cert", "a client certificate needs its key (--tls-key) and the other way round")
    keys = _columns("--keys", a.keys, KEY_TYPES, lists=False)
    features = _columns("--features", a.features, SCALARS, lists=True)
    names = {c.name for c in keys}
    if clash := sorted(names & {c.name for c in features}):
        raise ConfigError("--features", f"{', '.join(clash)} is also a join key")
    for opt, value in (("--timestamp-field", a.timestamp_field), ("--created-field", a.created_field)):
        if value is not None and (not _NAME.match(value) or value in names or value in {c.name for c in features}):
            raise ConfigError(opt, f"{value!r} must be an identifier of its own (not a key or feature)")
    if a.source not in SOURCES:
        raise ConfigError("--source", f"{a.source!r} is not one of {', '.join(SOURCES)}")
    servers: tuple[str, ...] = ()
    if a.source == "kafka":
        servers = tuple(s for s in (a.kafka_bootstrap_servers or "").split(",") if s)
        if not servers or not all(re.match(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$", s) for s in servers):
            raise ConfigError("--kafka-bootstrap-servers", f"{a.kafka_bootstrap_servers!r} is not host:port[,host:port...]")
        if not a.kafka_topic:
            raise ConfigError("--kafka-topic", "a kafka source needs its topic")
        if a.kafka_start not in KAFKA_STARTS:
            raise ConfigError("--kafka-start", f"{a.kafka_start!r} is not one of {', '.join(KAFKA_STARTS)}")
    else:
        for opt, given in (("--kafka-start", a.kafka_start != "committed"), ("--kafka-bounded", a.kafka_bounded),
                           ("--kafka-timeout-ms", a.kafka_timeout_ms is not None)):
            if given:
                raise ConfigError(opt, f"only for --source kafka, not {a.source}")
    flink_conf = []
    for item in a.flink_conf:
        key, eq, value = item.partition("=")
        if not eq or not _CONF_KEY.match(key) or not value.strip():
            raise ConfigError("--flink-conf", f"{item!r} is not key=value with a dotted Flink option as key")
        flink_conf.append((key, value))
    if dup := sorted({k for k, _ in flink_conf if sum(1 for k2, _ in flink_conf if k2 == k) > 1}):
        raise ConfigError("--flink-conf", f"option(s) given twice: {', '.join(dup)}")
    positive = {"--synthetic-rows": a.synthetic_rows, "--synthetic-rate": a.synthetic_rate, "--flush-ms": a.flush_ms,
                "--buffer-timeout-ms": a.buffer_timeout_ms,
                "--batch-rows": a.batch_rows, "--push-slots": a.push_slots, "--parallelism": a.parallelism,
                "--kafka-timeout-ms": a.kafka_timeout_ms}
    for opt, value in positive.items():
        if value is not None and value <= 0:
            raise ConfigError(opt, f"must be positive, got {value:g}")
    if a.push_retries is not None and a.push_retries < 0:
        raise ConfigError("--push-retries", f"must be 0 or more, got {a.push_retries}")
    given = {k: v for k, v in {
        "synthetic_rows": a.synthetic_rows, "synthetic_rate": a.synthetic_rate, "synthetic_first": a.synthetic_first,
        "flush_ms": a.flush_ms, "buffer_timeout_ms": a.buffer_timeout_ms, "batch_rows": a.batch_rows,
        "push_slots": a.push_slots, "push_retries": a.push_retries, "parallelism": a.parallelism,
        "kafka_timeout_ms": a.kafka_timeout_ms}.items() if v is not None}
    return JobConfig(feature_view=a.feature_view, push_source=a.push_source, feature_server=a.feature_server.rstrip("/"),
                     keys=keys, features=features, timestamp_field=a.timestamp_field, created_field=a.created_field,
                     tls_ca=a.tls_ca, tls_cert=a.tls_cert, tls_key=a.tls_key, source=a.source,
                     kafka_bootstrap_servers=servers, kafka_topic=a.kafka_topic, kafka_group=a.kafka_group,
                     kafka_start=a.kafka_start, kafka_bounded=a.kafka_bounded, flink_conf=tuple(flink_conf), **given)
