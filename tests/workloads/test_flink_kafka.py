"""The streaming job's Kafka path for real: a KRaft Kafka broker on loopback (tools/kafka_rig.py: Apache Kafka's jars
from Maven, TLS with the rig's CA, as the cluster's `tls` listener), the shipped PyFlink job with its real
`KafkaSource` (the Flink Kafka connector jar in Flink's lib, as in the job image) and the arguments of the
FlinkDeployment rendered for `item-stats` (changed only where the loopback differs: brokers, feature server, CA), pushing
through Feast's feature server over https into Redis (tools/flink_rig.py on tools/feast_rig.py).

- a backlog of records keyed by entity on the view's topic (two partitions) with two malformed records among them:
  the job, bounded at the offsets of its start (`--kafka-bounded`), ends by itself (exit 0), every good row is
  readable online with its values, and each malformed record is dropped and logged with its reason;
- a broker that is not there: the job exits 1 naming the brokers and topic (`--kafka-timeout-ms` 5 s);
- checkpoints and a restart: the job unbounded, checkpointing every 500 ms to a file:// folder, records produced live
  at a fixed rate; killed (SIGKILL) mid-stream and started again from its latest checkpoint: every row is readable
  with its values (at-least-once), rows pushed twice are counted (a pass-through in front of the feature server sees
  every push) and fewer than the first run pushed (the second run resumed from the checkpoint's offsets, not from
  the start of the topic).

Outside CI a missing JRE, PyFlink venv, Feast venv, redis-server or Kafka jars skips (with the reason printed); with
CI=true it fails (.ci/run installs them; scripts/flink_venv.sh fetches the jars). Pure checks of the new job options
run everywhere.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from infra.loader import load_environment
from tests.conftest import require
from tools import flink_rig, kafka_rig
from tools.feast_rig import RigError
from workloads.streaming import job as stream_job
from workloads.streaming import rows
from workloads.streaming.config import ConfigError, JobConfig, parse_args

BACKLOG = 200                    # rows in the topic before the bounded run
LIVE, LIVE_RATE = 400, 100.0     # rows produced live during the checkpointed runs
KILL_AFTER = 120                 # the first checkpointed run is killed once this many live rows were pushed
FIRST = flink_rig.FIRST_ENTITY
LIVE_FIRST = FIRST + 100_000
MALFORMED = [("bad-json", "not json {"), ("bad-feature", json.dumps({"item_id": "k1", "event_timestamp": 1.0}))]
QUICK = flink_rig.QUICK_JVM


@pytest.fixture(scope="module")
def view():
    return next(v for v in load_environment("local").feature_views if v.name == "item-stats")


# ---- the job's Kafka options (no PyFlink, no broker)

def _base_args(view) -> list[str]:
    return flink_rig.rendered_args(view)


def test_kafka_options_round_trip(view):
    cfg = parse_args(_base_args(view) + ["--kafka-start", "earliest", "--kafka-bounded", "--kafka-timeout-ms", "5000",
                                         "--flink-conf", "execution.checkpointing.interval=500ms",
                                         "--flink-conf", "execution.checkpointing.dir=file:///tmp/c=1"])
    assert (cfg.kafka_start, cfg.kafka_bounded, cfg.kafka_timeout_ms) == ("earliest", True, 5000)
    assert cfg.flink_conf == (("execution.checkpointing.interval", "500ms"), ("execution.checkpointing.dir", "file:///tmp/c=1"))
    assert parse_args(cfg.to_args()) == cfg
    rendered = parse_args(_base_args(view))     # the cluster's job: committed offsets, unbounded, Kafka's timeouts
    assert (rendered.kafka_start, rendered.kafka_bounded, rendered.kafka_timeout_ms, rendered.flink_conf) == \
        ("committed", False, 60_000, ())
    assert not any(a.startswith(("--kafka-start", "--kafka-bounded", "--kafka-timeout", "--flink-conf")) for a in rendered.to_args())


@pytest.mark.parametrize(("extra", "option", "reason"), [
    (["--kafka-start", "newest"], "--kafka-start", "'newest' is not one of committed, earliest, latest"),
    (["--kafka-timeout-ms", "0"], "--kafka-timeout-ms", "must be positive, got 0"),
    (["--flink-conf", "checkpointing"], "--flink-conf", "'checkpointing' is not key=value with a dotted Flink option as key"),
    (["--flink-conf", "a.b=1", "--flink-conf", "a.b=2"], "--flink-conf", "option(s) given twice: a.b"),
])
def test_bad_kafka_options_name_the_option(view, extra, option, reason):
    with pytest.raises(ConfigError) as err:
        parse_args(_base_args(view) + extra)
    assert (err.value.option, str(err.value)) == (option, f"{option}: {reason}")


def test_kafka_options_are_refused_for_the_synthetic_source(view):
    args = _base_args(view)
    i = args.index("--source")
    synthetic = args[:i] + ["--source", "synthetic"]
    with pytest.raises(ConfigError, match=r"^--kafka-bounded: only for --source kafka, not synthetic$"):
        parse_args(synthetic + ["--kafka-bounded"])


def test_a_kafka_client_error_is_said_with_the_brokers_and_topic(view):
    cfg = parse_args(_base_args(view))
    java = ("org.apache.flink.runtime.client.JobExecutionException: Job execution failed.\nCaused by: "
            "org.apache.flink.util.FlinkRuntimeException: Failed to list subscribed topic partitions\nCaused by: "
            "org.apache.flink.kafka.shaded.org.apache.kafka.common.errors.TimeoutException: Timed out waiting for a "
            "node assignment. Call: describeTopics\n")
    assert stream_job.failure(RuntimeError(java), cfg) == (
        "Kafka hybridml-kafka-bootstrap.kafka.svc.cluster.local:9093 (topic features.item-stats): TimeoutException: "
        "Timed out waiting for a node assignment. Call: describeTopics")
    # the same text from a synthetic job keeps the plain root cause
    assert stream_job.failure(RuntimeError(java)) == ("org.apache.kafka.common.errors.TimeoutException: Timed out waiting "
                                                      "for a node assignment. Call: describeTopics")


# ---- for real

def record(cfg: JobConfig, n: int, event_time: float) -> tuple[str, str]:
    """Entity n's record as a producer writes it: keyed by the entity, the value the view's JSON shape."""
    body = rows.synthetic_record(cfg, n, event_time)
    return str(body[cfg.keys[0].name]), json.dumps(body)


@dataclass
class Restarted:
    first: flink_rig.JobRun                  # killed mid-stream
    second: flink_rig.JobRun                 # started from the first one's latest checkpoint, killed once all were in
    checkpoint: Path
    pushed_first: int                        # live rows the first run pushed (pass-through count)
    counts: dict                             # entity key -> times pushed, both runs
    fresh_ms: list[float]                    # event -> push acknowledged, rows the first run pushed before the kill
    gap_ms: float                            # the worst: a row produced while no job ran
    cfg: JobConfig = field(repr=False)


@dataclass
class KafkaRuns:
    rig: flink_rig.StreamRig
    broker: kafka_rig.Broker
    bounded: flink_rig.JobRun
    bounded_cfg: JobConfig
    no_broker: flink_rig.JobRun
    no_broker_cfg: JobConfig
    restarted: Restarted


def _latest_checkpoint(root: Path) -> Path | None:
    done = [p.parent for p in root.glob("*/chk-*/_metadata")]
    return max(done, key=lambda p: int(p.name.removeprefix("chk-"))) if done else None


def _wait(condition, what: str, timeout: float, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            if proc.poll() is not None:
                raise RigError(f"{what}: a process it needs exited ({proc.returncode}): {proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise RigError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


def _kill(proc: subprocess.Popen, started: float) -> flink_rig.JobRun:
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    return flink_rig.JobRun(proc.returncode, out, time.monotonic() - started, getattr(proc, "flink_log_dir", None))


def _restarted(rig: flink_rig.StreamRig, broker: kafka_rig.Broker, view, producer: subprocess.Popen) -> Restarted:
    """Job A (unbounded, checkpoints every 500 ms) reads records produced live; SIGKILL once KILL_AFTER of them were
    pushed; job B starts from A's latest checkpoint and is killed once every row was pushed."""
    tap = flink_rig.PushTap(rig, "item_id", "event_timestamp")
    checkpoints = rig.workdir / "checkpoints"
    conf = (("execution.checkpointing.interval", "500ms"), ("execution.checkpointing.dir", checkpoints.as_uri()),
            ("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION"))
    cfg = flink_rig.kafka_config(view, tap.url, rig.base.tls, broker.bootstrap, kafka_topic="features.item-stats.live",
                                 kafka_group="ingest-item-stats-live", kafka_start="earliest", flink_conf=conf)
    live = [rows.entity_key(cfg.keys[0], n) for n in range(LIVE_FIRST, LIVE_FIRST + LIVE)]
    live_set = set(live)
    procs: list[subprocess.Popen] = []
    try:
        assert producer.stdin
        a_started = time.monotonic()
        a = rig.start_job(cfg, QUICK)
        procs.append(a)
        # one warm-up record: once it is pushed, the job reads and pushes end to end
        warm = record(cfg, LIVE_FIRST - 1, time.time())
        producer.stdin.write(f"{warm[0]}\t{warm[1]}\n")
        producer.stdin.flush()
        _wait(lambda: tap.counts().get(warm[0]), "job A's first push", 120, [a, producer])

        def produce() -> None:
            t0 = time.time()
            for i, n in enumerate(range(LIVE_FIRST, LIVE_FIRST + LIVE)):
                if (pause := t0 + i / LIVE_RATE - time.time()) > 0:
                    time.sleep(pause)
                key, value = record(cfg, n, time.time())
                producer.stdin.write(f"{key}\t{value}\n")
                producer.stdin.flush()

        feeder = threading.Thread(target=produce, daemon=True)
        feeder.start()
        _wait(lambda: len(live_set & tap.counts().keys()) >= KILL_AFTER, f"{KILL_AFTER} live rows pushed", 60, [a, producer])
        # then a checkpoint taken after those rows were read: the restart must not push them again
        before = _latest_checkpoint(checkpoints)
        _wait(lambda: _latest_checkpoint(checkpoints) not in (None, before), "a checkpoint after them", 60, [a, producer])
        first = _kill(a, a_started)
        killed_at = time.time()
        with tap.lock:
            pushed_first = sum(1 for k, _, _ in tap.pushes if k in live_set)
            fresh = sorted((ack - ev) * 1000 for k, ev, ack in tap.pushes if k in live_set)
        checkpoint = _latest_checkpoint(checkpoints)
        assert checkpoint is not None
        b_started = time.monotonic()
        b = rig.start_job(dataclasses.replace(cfg, flink_conf=(*conf, ("execution.state-recovery.path", str(checkpoint)))),
                          QUICK)
        procs.append(b)
        _wait(lambda: live_set <= tap.counts().keys(), "every live row pushed after the restart", 120, [b, producer])
        second = _kill(b, b_started)
        feeder.join(timeout=5)
        with tap.lock:
            gap = max((ack - ev) * 1000 for k, ev, ack in tap.pushes if ev >= killed_at - 1) if tap.pushes else float("nan")
        return Restarted(first, second, checkpoint, pushed_first, tap.counts(), fresh, gap, cfg)
    finally:
        flink_rig.stop_groups(*procs)
        tap.close()


@pytest.fixture(scope="module")
def kafka_runs(view, tmp_path_factory):
    """Startups overlap: the broker starts, makes its topics and takes the backlog while Feast applies and serves,
    and the job against no broker runs beside them; then the bounded run, then the checkpointed runs."""
    why = list(dict.fromkeys(flink_rig.missing() + kafka_rig.missing()))   # both name a missing java
    require(not why, "; ".join(why))
    workdir = Path(tmp_path_factory.mktemp("flink-kafka"))
    rig = flink_rig.StreamRig(workdir, [view])
    broker = kafka_rig.Broker(workdir / "kafka", rig.base.tls)
    producer = dead_job = None
    started = time.monotonic()
    try:
        rig.base.start_redis()   # lays out the rig's certificates (the broker's too)
        bounded_cfg = flink_rig.kafka_config(view, "https://placeholder:1", rig.base.tls, "placeholder:1",
                                             kafka_start="earliest", kafka_bounded=True)
        no_broker_cfg = flink_rig.kafka_config(view, "https://127.0.0.1:1", rig.base.tls,
                                               f"127.0.0.1:{kafka_rig.free_port()}", kafka_start="earliest",
                                               kafka_bounded=True, kafka_timeout_ms=5000)
        dead_job = rig.start_job(no_broker_cfg, QUICK)
        dead_started = time.monotonic()

        def broker_side() -> subprocess.Popen:
            broker.start()
            broker.create_topic(bounded_cfg.kafka_topic)
            broker.create_topic("features.item-stats.live")
            backlog = [record(bounded_cfg, n, time.time()) for n in range(FIRST, FIRST + BACKLOG)]
            backlog[50:50] = [MALFORMED[0]]
            backlog[120:120] = [MALFORMED[1]]
            broker.produce(bounded_cfg.kafka_topic, backlog)
            return broker.producer("features.item-stats.live")   # the live run's producer: its JVM starts early

        with ThreadPoolExecutor(1) as pool:
            side = pool.submit(broker_side)
            rig.start_feast()
            producer = side.result()
        up = time.monotonic()
        no_broker = rig.finish_job(dead_job, dead_started, 120)
        bounded_cfg = flink_rig.kafka_config(view, rig.url, rig.base.tls, broker.bootstrap, kafka_start="earliest",
                                             kafka_bounded=True)
        run_started = time.monotonic()
        bounded = rig.finish_job(rig.start_job(bounded_cfg, QUICK), run_started, 120)
        bounded_done = time.monotonic()
        restarted = _restarted(rig, broker, view, producer)
        print(f"\nRedis, Feast, the broker and its backlog up {up - started:.1f} s; bounded run {bounded.seconds:.1f} s; "
              f"checkpointed runs {time.monotonic() - bounded_done:.1f} s (first {restarted.first.seconds:.1f} s, "
              f"second {restarted.second.seconds:.1f} s); no-broker job {no_broker.seconds:.1f} s beside them")
        yield KafkaRuns(rig, broker, bounded, bounded_cfg, no_broker, no_broker_cfg, restarted)
    finally:
        flink_rig.stop_groups(producer, dead_job)
        broker.close()
        rig.close()


def _check_values(runs: KafkaRuns, cfg: JobConfig, entities: list[int]) -> None:
    status, got = runs.rig.read_back(runs.rig.views[0], cfg, entities)
    assert status == 200, got
    wrong = [n for i, n in enumerate(entities)
             if {name: got[name][i] for name in rows.synthetic_features(cfg, n)} != rows.synthetic_features(cfg, n)]
    assert not wrong, f"{len(wrong)} rows not readable with their values, e.g. entity {wrong[0]}: " \
                      f"{ {name: got[name][entities.index(wrong[0])] for name in got} }"


@pytest.mark.slow
def test_a_bounded_kafka_backlog_is_all_readable_online_with_its_values(kafka_runs):
    run = kafka_runs.bounded
    assert run.returncode == 0, run.output[-3000:]
    assert "input ended" in run.output
    _check_values(kafka_runs, kafka_runs.bounded_cfg, list(range(FIRST, FIRST + BACKLOG)))
    assert kafka_runs.broker.end_offsets(kafka_runs.bounded_cfg.kafka_topic).keys() == {0, 1}   # both partitions used


@pytest.mark.slow
def test_malformed_records_in_the_topic_are_dropped_and_logged_with_their_reason(kafka_runs):
    log = kafka_runs.bounded.flink_log()
    dropped = [ln.split(" - ", 1)[1] for ln in log.splitlines() if "dropped malformed record" in ln]
    assert sorted(dropped) == sorted([
        "feature view item-stats: dropped malformed record (not JSON: Expecting value: line 1 column 1 (char 0)): not json {",
        "feature view item-stats: dropped malformed record (visits_1h: missing (every key and feature is required)): "
        + MALFORMED[1][1]]), log[-3000:]
    cfg = kafka_runs.bounded_cfg     # entity k1 of the malformed record was never written
    status, got = kafka_runs.rig.read_back(kafka_runs.rig.views[0], cfg, [1])
    assert status == 200 and all(got[c.name] == [None] for c in cfg.features), got


@pytest.mark.slow
def test_a_broker_that_is_not_there_fails_the_job_naming_it(kafka_runs):
    run, cfg = kafka_runs.no_broker, kafka_runs.no_broker_cfg
    assert run.returncode == 1, run.output[-3000:]
    line = next((ln for ln in run.output.splitlines() if ln.startswith("workloads.streaming.job:")), run.output[-2000:])
    assert line == (f"workloads.streaming.job: feature view item-stats: job failed: Kafka {cfg.kafka_bootstrap_servers[0]} "
                    "(topic features.item-stats): TimeoutException: Timed out waiting for a node assignment. Call: "
                    "describeTopics"), line
    assert run.seconds < 60


@pytest.mark.slow
def test_a_killed_job_restarts_from_its_checkpoint_and_every_row_is_readable(kafka_runs):
    r = kafka_runs.restarted
    live = list(range(LIVE_FIRST, LIVE_FIRST + LIVE))
    keys = [rows.entity_key(r.cfg.keys[0], n) for n in live]
    assert all(r.counts.get(k, 0) >= 1 for k in keys)
    _check_values(kafka_runs, r.cfg, live)
    twice = sum(c - 1 for k, c in r.counts.items() if k in set(keys))
    restored = r.second.flink_log()
    assert f"from savepoint {r.checkpoint} " in restored, restored[-3000:]      # Flink's words for any restore path
    assert "Restoring SplitEnumerator of source Source: kafka features.item-stats.live from checkpoint" in restored
    assert "Restoring state for 1 split(s) to reader" in restored
    # resumed from the checkpoint's offsets, taken after KILL_AFTER rows were pushed: at most what the first run pushed
    # after it comes again (a restart from the topic's start would push all of the first run's rows again)
    assert twice <= r.pushed_first - KILL_AFTER, (twice, r.pushed_first)
    fresh = r.fresh_ms
    print(f"checkpointed runs: {LIVE} live rows at {LIVE_RATE:g}/s; first run pushed {r.pushed_first} of them before "
          f"SIGKILL, restored from {r.checkpoint.name}; rows pushed twice: {twice}; freshness (event -> push acknowledged) "
          f"before the kill p50 {flink_rig.percentile(fresh, 50):.0f} ms, p99 "
          f"{flink_rig.percentile(fresh, 99):.0f} ms over {len(fresh)} rows; worst across the restart {r.gap_ms / 1000:.1f} s")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
