"""The PyFlink job: the view's stream -> checked rows -> per-slot buffers -> Feast `/push` (over TLS).

    python -m workloads.streaming.job --feature-view V --push-source P --feature-server https://... --keys k:type
        --features f:dtype[:len],... [--source kafka --kafka-bootstrap-servers h:p --kafka-topic T
        [--kafka-start committed|earliest|latest] [--kafka-bounded] [--kafka-timeout-ms MS] | --source synthetic
        --synthetic-rows N --synthetic-rate R] [--tls-ca ca.crt] [--flink-conf key=value ...] ...
        (workloads/streaming/config.py; the FlinkDeployment passes them after `-pym workloads.streaming.job`)

Graph: source (Kafka, or the bounded synthetic stream paced at `--synthetic-rate` rows/s, each record stamped with the
time it was due) -> `ParseRows` (JSON record -> typed row; a malformed record is dropped, counted in the metric
`malformed_rows` and logged with its reason) -> keyed by entity hash into `--push-slots` buffers per push subtask
(`slot_keys`) -> `PushBuffer`:
a buffer is pushed when it holds `--batch-rows` rows or its oldest row has waited `--flush-ms` (a processing-time
timer); the end of a bounded input (the final watermark) pushes what is left. The buffer is Flink keyed state, so
rows taken from the source before a checkpoint and not yet pushed are in that checkpoint: at-least-once into the
online store, where pushing a row twice writes the same values.

Python functions run in Flink's thread mode (`python.execution-mode: thread`, set here and in the FlinkDeployment's
configuration): Python inside the TaskManager through pemja, without the Beam worker process and its gRPC hop.
Exit codes: 0 done (bounded input), 1 the job failed (the push's or the source's error printed), 2 bad arguments.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

from workloads.streaming.config import ConfigError, JobConfig, parse_args
from workloads.streaming.push import Pusher
from workloads.streaming.rows import MalformedRow, event_seconds, parse_record, push_body, synthetic_record

LOG = logging.getLogger("workloads.streaming.job")
END_OF_INPUT_MS = 2**62
"""An event-time timer this far out fires only on the final watermark a bounded source sends when it ends."""
MALFORMED_LOGGED = 20


MAX_PARALLELISM = 128
"""Flink's key groups (fixed here: a savepoint's keyed state is bound to it)."""


def slot_keys(assign: Callable[[int], int], parallelism: int, per_subtask: int) -> list[int]:
    """Buffer keys that Flink spreads evenly: `per_subtask` keys for each push subtask, the smallest integers that
    `assign` (Flink's own key -> subtask function) sends there. Keys 0..n-1 would not do: with two subtasks, Flink
    sends keys 0 and 1 both to the first, and one thread would push everything."""
    out: dict[int, list[int]] = {i: [] for i in range(parallelism)}
    key = 0
    while any(len(keys) < per_subtask for keys in out.values()):
        keys = out[assign(key)]
        if len(keys) < per_subtask:
            keys.append(key)
        key += 1
    return [k for i in range(parallelism) for k in out[i]]


def slot_of(cfg: JobConfig, row: dict[str, Any], keys: list[int]) -> int:
    """Rows of one entity always go to the same buffer (their pushes keep their order)."""
    entity = "\x1f".join(str(row[c.name]) for c in cfg.keys)
    return keys[zlib.crc32(entity.encode()) % len(keys)]


def _functions():
    """The PyFlink functions (imported here: the pure modules above must import without PyFlink)."""
    from pyflink.common import Types
    from pyflink.datastream.functions import FlatMapFunction, KeyedProcessFunction, MapFunction, RuntimeContext
    from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

    class PaceSynthetic(MapFunction):
        """Entity number -> its record, released at `synthetic_rate` rows/s from the first one and stamped with the
        time it was due (open loop: a late record keeps its due time, so lateness counts toward freshness)."""

        def __init__(self, cfg: JobConfig) -> None:
            self.cfg = cfg
            self.t0: float | None = None

        def map(self, n: int) -> str:
            if self.t0 is None:
                self.t0 = time.time()
            due = self.t0 + (n - self.cfg.synthetic_first) / self.cfg.synthetic_rate
            if (pause := due - time.time()) > 0:
                time.sleep(pause)
            return json.dumps(synthetic_record(self.cfg, n, due))

    class ParseRows(FlatMapFunction):
        def __init__(self, cfg: JobConfig, keys: list[int]) -> None:
            self.cfg = cfg
            self.keys = keys
            self.malformed = 0

        def open(self, runtime_context: RuntimeContext) -> None:
            self.counter = runtime_context.get_metrics_group().counter("malformed_rows")

        def flat_map(self, raw: str):
            try:
                row = parse_record(self.cfg, raw, time.time())
            except MalformedRow as exc:
                self.malformed += 1
                self.counter.inc()
                if self.malformed <= MALFORMED_LOGGED:
                    LOG.warning("feature view %s: dropped malformed record (%s): %.200s", self.cfg.feature_view, exc, raw)
                return
            yield slot_of(self.cfg, row, self.keys), json.dumps(row)

    class PushBuffer(KeyedProcessFunction):
        def __init__(self, cfg: JobConfig) -> None:
            self.cfg = cfg

        def open(self, runtime_context: RuntimeContext) -> None:
            self.rows = runtime_context.get_list_state(ListStateDescriptor("rows", Types.STRING()))
            self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.INT()))
            self.armed = runtime_context.get_state(ValueStateDescriptor("armed", Types.BOOLEAN()))
            self.pusher = Pusher(self.cfg)
            group = runtime_context.get_metrics_group()
            self.pushed = group.counter("pushed_rows")
            self.lag_ms = group.distribution("push_lag_ms")   # event time -> push acknowledged

        def close(self) -> None:
            self.pusher.close()

        def process_element(self, value, ctx):
            self.rows.add(value[1])
            count = (self.count.value() or 0) + 1
            if count >= self.cfg.batch_rows:
                self._flush()
                return
            self.count.update(count)
            if not self.armed.value():
                timers = ctx.timer_service()
                timers.register_processing_time_timer(timers.current_processing_time() + self.cfg.flush_ms)
                timers.register_event_time_timer(END_OF_INPUT_MS)
                self.armed.update(True)

        def on_timer(self, timestamp: int, ctx):
            self._flush()

        def _flush(self) -> None:
            rows = [json.loads(r) for r in self.rows.get()]
            self.rows.clear()
            self.count.clear()
            self.armed.clear()
            if not rows:
                return
            self.pusher.push(push_body(self.cfg, rows))
            done = time.time()
            self.pushed.inc(len(rows))
            for row in rows:
                self.lag_ms.update(int((done - event_seconds(self.cfg, row)) * 1000))

    return Types, PaceSynthetic, ParseRows, PushBuffer


def _kafka_source(cfg: JobConfig):
    """Kafka over TLS (trusting `--tls-ca`), from the group's committed offsets (else the latest), or from the topic's
    earliest or latest (`--kafka-start`); unbounded unless `--kafka-bounded`, which stops at the offsets that are the
    latest when the job starts (a finite backlog: local runs and tests). Offsets are committed to the group on each
    checkpoint. Needs the Kafka connector jar (flink-sql-connector-kafka, whose kafka-clients are relocated under
    org.apache.flink.kafka.shaded, as PyFlink's `KafkaOffsetResetStrategy` expects) in the image's /opt/flink/lib:
    PyFlink does not bundle it."""
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.kafka import KafkaOffsetResetStrategy, KafkaOffsetsInitializer, KafkaSource

    starts = {"committed": lambda: KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.LATEST),
              "earliest": KafkaOffsetsInitializer.earliest, "latest": KafkaOffsetsInitializer.latest}
    builder = (KafkaSource.builder().set_bootstrap_servers(",".join(cfg.kafka_bootstrap_servers))
               .set_topics(cfg.kafka_topic).set_group_id(cfg.kafka_group or f"ingest-{cfg.feature_view}")
               .set_starting_offsets(starts[cfg.kafka_start]())
               .set_value_only_deserializer(SimpleStringSchema()))
    if cfg.kafka_bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    # Kafka's clients refuse a request timeout above the call timeout: the shorter of 30 s (their default) and it
    builder = (builder.set_property("default.api.timeout.ms", str(cfg.kafka_timeout_ms))
               .set_property("request.timeout.ms", str(min(30_000, cfg.kafka_timeout_ms))))
    if cfg.tls_ca:
        builder = (builder.set_property("security.protocol", "SSL").set_property("ssl.truststore.type", "PEM")
                   .set_property("ssl.truststore.location", cfg.tls_ca))
    return builder.build()


def _flink_assignment(parallelism: int) -> Callable[[int], int]:
    """Flink's key -> subtask function for the keys `key_by` makes of an INT key (a one-field Row), through the
    gateway: the job spreads its buffers with Flink's own arithmetic rather than a copy of it."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    assignment = jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment

    def assign(key: int) -> int:
        row = jvm.org.apache.flink.types.Row(1)
        row.setField(0, jvm.java.lang.Integer(key))
        return int(assignment.assignKeyToParallelOperator(row, MAX_PARALLELISM, parallelism))

    return assign


def build(env: Any, cfg: JobConfig) -> None:
    """The job's graph on `env` (a StreamExecutionEnvironment)."""
    from pyflink.common import WatermarkStrategy
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource

    types, pace, parse, buffer = _functions()
    if cfg.source == "synthetic":
        last = cfg.synthetic_first + cfg.synthetic_rows - 1
        numbers = env.from_source(NumberSequenceSource(cfg.synthetic_first, last), WatermarkStrategy.no_watermarks(),
                                  "synthetic").set_parallelism(1)
        # one pacer: the rate is the stream's, not a subtask's
        records = numbers.map(pace(cfg), output_type=types.STRING()).set_parallelism(1)
    else:
        records = env.from_source(_kafka_source(cfg), WatermarkStrategy.no_watermarks(), f"kafka {cfg.kafka_topic}")
    keys = slot_keys(_flink_assignment(env.get_parallelism()), env.get_parallelism(), cfg.push_slots)
    rows = records.flat_map(parse(cfg, keys), output_type=types.TUPLE([types.INT(), types.STRING()])).name("parse rows")
    (rows.key_by(lambda slot_row: slot_row[0], key_type=types.INT())
     .process(buffer(cfg)).name(f"push {cfg.push_source}"))


_PYTHON_ERROR = re.compile(r"(?:PythonException|Exception): <class '[\w.]+\.(\w+)'>: (.+)")
_KAFKA_SHADED = "org.apache.flink.kafka.shaded."


def failure(exc: BaseException, cfg: JobConfig | None = None) -> str:
    """The root cause of a failed job, without the Java stack: the Python exception a function raised when there is
    one (a PushError names the view, the URL and what came back), else the innermost Java cause; a Kafka client's
    error (which names no broker) is said with the brokers and topic the job was reading."""
    text = str(exc).replace(_KAFKA_SHADED, "")
    causes = re.findall(r"Caused by: ([^\n]+)", text)
    if cfg is not None and cfg.source == "kafka" and causes and causes[-1].startswith("org.apache.kafka."):
        return (f"Kafka {','.join(cfg.kafka_bootstrap_servers)} (topic {cfg.kafka_topic}): "
                f"{causes[-1].removeprefix('org.apache.kafka.common.errors.')}")
    found = _PYTHON_ERROR.findall(text)
    if found:
        name, message = found[-1]
        return f"{name}: {message.strip()}"
    return causes[-1] if causes else (text.strip().splitlines() or [type(exc).__name__])[0]


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"workloads.streaming.job: bad argument {exc}", file=sys.stderr)
        return 2
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    conf = Configuration()
    conf.set_string("python.execution-mode", "thread")
    for key, value in cfg.flink_conf:
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    if cfg.parallelism:
        env.set_parallelism(cfg.parallelism)
    env.set_max_parallelism(MAX_PARALLELISM)
    # Flink's default 100 ms would hold a row at each of the job's two network hops: freshness is the point here
    env.set_buffer_timeout(cfg.buffer_timeout_ms)
    started = time.time()
    try:
        build(env, cfg)
        env.execute(f"ingest-{cfg.feature_view}")
    except Exception as exc:  # noqa: BLE001 - the job's one exit: print the root cause, not a Java stack
        print(f"workloads.streaming.job: feature view {cfg.feature_view}: job failed: {failure(exc, cfg)}", file=sys.stderr)
        return 1
    print(f"workloads.streaming.job: feature view {cfg.feature_view}: input ended after {time.time() - started:.1f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
