"""The streaming job's pure parts (workloads/streaming: config, rows, push) and the FlinkDeployment that runs it
(workloads/render/flink.py), without PyFlink: the job's configuration is what the rendered object says, the
synthetic stream is shaped like the view, bad records and bad arguments are named. The job itself runs for real in
test_flink_job.py."""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from infra.errors import SpecError
from infra.features import DEFAULT_STREAM_BOOTSTRAP, StreamSource
from infra.loader import load_environment, parse_environment
from tests.conftest import SMALL_SPEC, dump
from tests.workloads import schemas
from tools.feast_rig import free_port
from workloads.render import feast_repo, feature_store, flink
from workloads.render.context import SiteContext
from workloads.streaming import job, push, rows
from workloads.streaming.config import ConfigError, parse_args

CTX = SiteContext(env_name="local", site="dc-local", site_kind="datacenter", domain="hybridml.test")
NS = "ml-internal"


@pytest.fixture(scope="module")
def view():
    return next(v for v in load_environment("local").feature_views if v.name == "item-stats")


def _deployment(view) -> dict:
    return next(o for o in feature_store.flink_objects(CTX, view, NS) if o["kind"] == "FlinkDeployment")


def _cfg(view):
    spec = _deployment(view)["spec"]["job"]
    assert spec["entryClass"] == flink.PYTHON_DRIVER and spec["args"][:2] == ["-pym", flink.JOB_MODULE]
    return parse_args(spec["args"][2:])


def test_the_flinkdeployment_runs_the_shipped_job_and_passes_the_crd_schema(view):
    dep = _deployment(view)
    assert schemas.validate(dep) == []
    job_spec = dep["spec"]["job"]
    assert job_spec["jarURI"] == f"local:///opt/flink/opt/flink-python-{flink.FLINK_VERSION}.jar"
    assert "entryClass" in job_spec and ".jar" not in " ".join(job_spec["args"])
    assert dep["spec"]["image"] == CTX.images.feature_ingest and dep["spec"]["flinkVersion"] == "v1_20"
    assert dep["spec"]["flinkConfiguration"]["python.execution-mode"] == "thread"
    pod = dep["spec"]["podTemplate"]["spec"]
    # the job pushes through Feast: it trusts the fleet CA and holds no Redis password
    assert pod["volumes"] == [{"name": "fleet-ca", "secret": {"secretName": feature_store.redis_tls_secret_name(view),
                                                              "defaultMode": 0o444, "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == flink.CA_MOUNT


def test_the_job_config_comes_from_the_rendered_object(view):
    cfg = _cfg(view)
    assert cfg.feature_view == "item-stats" and cfg.push_source == feast_repo.push_source_name(view.name) == "item_stats_push"
    assert cfg.feature_server == "https://feast-item-stats-online.ml-internal.svc.cluster.local:443"
    assert cfg.tls_ca == f"{flink.CA_MOUNT}/ca.crt" and cfg.tls_cert is None
    assert [(c.name, c.dtype) for c in cfg.keys] == [("item_id", "string")]
    assert [(c.name, c.dtype, c.length) for c in cfg.features] == [(f.name, f.dtype, f.length) for f in view.features]
    assert (cfg.timestamp_field, cfg.created_field) == ("event_timestamp", "created_at")
    assert cfg.source == "kafka" and cfg.kafka_bootstrap_servers == (DEFAULT_STREAM_BOOTSTRAP,)
    assert cfg.kafka_topic == "features.item-stats" and cfg.kafka_group == "ingest-item-stats"
    assert parse_args(cfg.to_args()) == cfg                                   # the arguments carry the whole config
    local = dataclasses.replace(cfg, source="synthetic", synthetic_rows=7, synthetic_rate=2.5, kafka_bootstrap_servers=(),
                                kafka_topic=None, kafka_group=None)
    assert parse_args(local.to_args()) == local


def test_the_spec_stream_reaches_the_job_and_only_streaming_views_may_have_one(view):
    declared = view.model_copy(update={"stream": StreamSource(bootstrap_servers=["k1.example:9093", "k2.example:9093"],
                                                              topic="items.v2")})
    cfg = _cfg(declared)
    assert cfg.kafka_bootstrap_servers == ("k1.example:9093", "k2.example:9093") and cfg.kafka_topic == "items.v2"
    spec = copy.deepcopy(SMALL_SPEC)
    spec["feature_views"][0]["stream"] = {"topic": "users"}
    with pytest.raises(SpecError) as info:
        parse_environment(dump(spec), "envs/fv.yaml")
    rendered = [i.render(info.value.file) for i in info.value.issues]
    assert any("feature_views[0].stream: stream is read by the Flink job of a streaming view" in r for r in rendered), rendered
    spec["feature_views"][0].update(streaming=True, stream={"bootstrap_servers": ["no port"]})
    with pytest.raises(SpecError) as info:
        parse_environment(dump(spec), "envs/fv.yaml")
    assert any("fv.yaml:" in r and "feature_views[0].stream.bootstrap_servers[0]: String should match pattern" in r
               for r in (i.render(info.value.file) for i in info.value.issues))


@pytest.mark.parametrize("change,option,reason", [
    (("--features", "visits:int64,blob:bytes"), "--features", "blob: type 'bytes' cannot be pushed as JSON"),
    (("--features", "a:int64,a:float32"), "--features", "column(s) named twice: a"),
    (("--features", "item_id:int64"), "--features", "item_id is also a join key"),
    (("--keys", "item_id:float32"), "--keys", "type 'float32' cannot be pushed"),
    (("--feature-server", "ftp://x"), "--feature-server", "is not an http(s)://host[:port] URL"),
    (("--tls-ca", ""), "--tls-ca", "an https feature server needs the CA file"),
    (("--source", "files"), "--source", "'files' is not one of kafka, synthetic"),
    (("--kafka-topic", ""), "--kafka-topic", "a kafka source needs its topic"),
    (("--kafka-bootstrap-servers", "broker"), "--kafka-bootstrap-servers", "is not host:port"),
    (("--flush-ms", "0"), "--flush-ms", "must be positive"),
    (("--features", ""), "--features", "none given: the job types every row by the spec's keys and features"),
    (("--created-field", "visits_1h"), "--created-field", "must be an identifier of its own"),
], ids=["bytes", "twice", "key-clash", "key-type", "url", "no-ca", "source", "topic", "brokers", "flush", "no-features", "created"])
def test_bad_job_arguments_name_the_option(view, change, option, reason):
    args = _cfg(view).to_args()
    opt, value = change
    args[args.index(opt) + 1] = value
    with pytest.raises(ConfigError) as info:
        parse_args(args)
    assert info.value.option == option and reason in str(info.value)


def test_bad_arguments_exit_2_before_any_flink(view, capsys):
    assert job.main(["--feature-view", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("workloads.streaming.job: bad argument arguments: the following arguments are required: --push-source")
    assert "Traceback" not in err


def test_the_synthetic_stream_is_shaped_like_the_view(view):
    cfg = _cfg(view)
    record = rows.synthetic_record(cfg, 42, 1_800_000_000.5)
    assert set(record) == {"item_id", *(f.name for f in view.features), "event_timestamp"}
    assert record["item_id"] == "k42" and isinstance(record["visits_1h"], int) and isinstance(record["ctr_1h"], float)
    assert len(record["genre"]) == 12 and len(record["tags"]) == 4 and all(isinstance(t, str) for t in record["tags"])
    row = rows.parse_record(cfg, json.dumps(record), now=1_800_000_001.0)       # what the job does with a record
    assert row["event_timestamp"] == "2027-01-15T08:00:00.500000+00:00" and row["created_at"] == "2027-01-15T08:00:01+00:00"
    assert {k: row[k] for k in rows.synthetic_features(cfg, 42)} == rows.synthetic_features(cfg, 42)
    assert rows.synthetic_features(cfg, 42) != rows.synthetic_features(cfg, 43)   # every entity checkable on its own
    body = rows.push_body(cfg, [row, row])
    assert body["push_source_name"] == "item_stats_push" and body["to"] == "online"
    assert set(body["df"]) == {"item_id", "visits_1h", "ctr_1h", "genre", "tags", "event_timestamp", "created_at"}
    assert all(len(v) == 2 for v in body["df"].values())


@pytest.mark.parametrize("change,reason", [
    ({"visits_1h": None}, "visits_1h: missing"),
    ({"visits_1h": "7"}, "visits_1h: '7' is not a int64"),
    ({"visits_1h": True}, "visits_1h: True is not a int64"),
    ({"ctr_1h": float("nan")}, "ctr_1h: nan is not a float32"),
    ({"tags": "a,b"}, "tags: 'a,b' is not a list of string"),
    ({"tags": ["a", 3]}, "tags[1]: 3 is not a string"),
    ({"event_timestamp": "yesterday"}, "event_timestamp: 'yesterday' is no timestamp"),
    ({"item_id": 5}, "item_id: 5 is not a string"),
], ids=["missing", "string-int", "bool-int", "nan", "not-list", "element", "timestamp", "key"])
def test_malformed_records_name_the_column(view, change, reason):
    cfg = _cfg(view)
    record = {**rows.synthetic_record(cfg, 1, 1_800_000_000.0), **change}
    with pytest.raises(rows.MalformedRow, match=reason.replace("[", r"\[").replace("]", r"\]")):
        rows.check_row(cfg, record, now=0)
    with pytest.raises(rows.MalformedRow, match="not JSON"):
        rows.parse_record(cfg, b"{not json", now=0)
    int32 = dataclasses.replace(cfg, features=(dataclasses.replace(cfg.features[0], dtype="int32"),))
    with pytest.raises(rows.MalformedRow, match="out of int32 range"):
        rows.check_row(int32, {"item_id": "k1", "visits_1h": 2**31, "event_timestamp": 0}, now=0)


def test_buffers_spread_over_the_push_subtasks_and_keep_an_entity_in_one(view):
    # Flink's key -> subtask assignment of keys 0..15 for two subtasks, as its KeyGroupRangeAssignment answered
    # for PyFlink's INT keys, and where a probe job's keyed operator saw them: keys 0 and 1 would both land on subtask 0
    flink_says = [0, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    keys = job.slot_keys(flink_says.__getitem__, parallelism=2, per_subtask=1)
    assert keys == [0, 2] and sorted(flink_says[k] for k in keys) == [0, 1]
    assert job.slot_keys(flink_says.__getitem__, parallelism=2, per_subtask=2) == [0, 1, 2, 3]
    cfg = _cfg(view)
    slots = {job.slot_of(cfg, {"item_id": f"k{n}"}, keys) for n in range(200)}
    assert slots == set(keys)
    assert job.slot_of(cfg, {"item_id": "k7"}, keys) == job.slot_of(cfg, {"item_id": "k7"}, keys)


def test_a_push_nobody_answers_fails_after_its_retries_naming_url_and_source(view):
    port = free_port()                                  # nothing listens there
    cfg = dataclasses.replace(_cfg(view), feature_server=f"http://127.0.0.1:{port}", push_retries=2)
    waits: list[float] = []
    pusher = push.Pusher(cfg, sleep=waits.append)
    with pytest.raises(push.PushError) as info:
        pusher.push(rows.push_body(cfg, [rows.check_row(cfg, rows.synthetic_record(cfg, 1, 1.0), 1.0)]))
    message = str(info.value)
    assert f"push of 1 row(s) to http://127.0.0.1:{port}/push (push source item_stats_push) failed after 3 tries" in message
    assert "Connection refused" in message and waits == [0.1, 0.2] and pusher.pushed_rows == 0


def test_a_failed_job_reports_the_python_cause_not_the_java_stack():
    java = ("An error occurred while calling o13.execute.\n: org.apache.flink.runtime.client.JobExecutionException: "
            "Job execution failed.\n\tat org.apache.flink...\nCaused by: pemja.core.PythonException: <class "
            "'workloads.streaming.push.PushError'>: feature view v: push of 3 row(s) to https://h/push failed after 5 tries: "
            "HTTP 500: boom\n\tat /x/push.py.push(push.py:97)\n")
    assert job.failure(RuntimeError(java)) == ("PushError: feature view v: push of 3 row(s) to https://h/push failed after "
                                               "5 tries: HTTP 500: boom")
    assert job.failure(RuntimeError("Job failed\nCaused by: java.io.IOException: disk full\n")) == "java.io.IOException: disk full"
