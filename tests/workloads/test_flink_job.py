"""The shipped streaming job for real: PyFlink (.venv-flink, scripts/flink_venv.sh; a local Flink MiniCluster on the
Debian JRE) runs workloads/streaming with the arguments of the FlinkDeployment rendered for the local spec's
streaming view, on a bounded synthetic stream, pushing through Feast's feature server over https into a real Redis
(Debian's redis-server, the cluster's files, TLS only, Sentinels: tools/flink_rig.py on tools/feast_rig.py).

Every pushed row must be readable online with its values; a feature server that does not answer and bad arguments
must end the job with the cause named. Bounded: 300 rows at 150 rows/s; about a minute on a quiet machine. Outside CI a missing venv, JRE or
redis-server skips (with the reason printed); with CI=true it fails (.ci/run installs them).
"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.loader import load_environment
from tests.conftest import require
from tools import flink_rig
from tools.feast_rig import free_port
from workloads.streaming import rows

pytestmark = pytest.mark.slow
ROWS, RATE = 300, 150.0


@pytest.fixture(scope="module")
def view():
    return next(v for v in load_environment("local").feature_views if v.name == "item-stats")


@dataclass
class Runs:
    rig: flink_rig.StreamRig
    stream: flink_rig.Stream
    failed: flink_rig.JobRun       # the same job against a feature server that does not answer


@pytest.fixture(scope="module")
def runs(view, tmp_path_factory):
    """The watcher imports Feast while Redis starts (which lays out the certificates); the failing job starts while
    Feast applies and serves; then the stream: startups overlap where they can (wall time is CI's budget)."""
    why = flink_rig.missing()
    require(not why, "; ".join(why))
    rig = flink_rig.StreamRig(Path(tmp_path_factory.mktemp("flink")), [view])
    failing = None
    watcher = rig.spawn_watcher()
    try:
        started = time.monotonic()
        rig.base.start_redis()
        dead = flink_rig.local_config(view, f"https://127.0.0.1:{free_port()}", rig.base.tls, 3, 100.0, push_retries=1,
                                      synthetic_first=flink_rig.FIRST_ENTITY - 10)
        failing = rig.start_job(dead, flink_rig.QUICK_JVM)
        failing_started = time.monotonic()
        rig.start_feast()
        feast_up = time.monotonic()
        stream = rig.stream(view, rig.config(view, ROWS, RATE), jvm_args=flink_rig.QUICK_JVM, watcher=watcher)
        failed = rig.finish_job(failing, failing_started)
        print(f"\nRedis and Feast up {feast_up - started:.1f} s, then the stream of {ROWS} rows at {RATE:g}/s "
              f"{time.monotonic() - feast_up:.1f} s (the failing job took {failed.seconds:.1f} s beside them)")
        yield Runs(rig, stream, failed)
    finally:
        flink_rig.stop_groups(failing, watcher)
        rig.close()


def test_every_streamed_row_is_readable_online_with_its_values(view, runs):
    stream, rig = runs.stream, runs.rig
    assert stream.job.returncode == 0, stream.job.output[-3000:]
    assert "input ended" in stream.job.output
    assert stream.missing_count == 0 and len(stream.seen) == ROWS, f"{stream.missing_count} rows never became readable"
    entities = list(range(flink_rig.FIRST_ENTITY, flink_rig.FIRST_ENTITY + ROWS))
    status, got = rig.read_back(view, stream.cfg, entities)
    assert status == 200, got
    for i, n in enumerate(entities):
        want = rows.synthetic_features(stream.cfg, n)
        assert {name: got[name][i] for name in want} == want, n
    fresh = stream.freshness_ms
    print(f"freshness p50 {flink_rig.percentile(fresh, 50):.0f} ms, p99 {flink_rig.percentile(fresh, 99):.0f} ms, "
          f"{stream.rows_per_s:.0f} rows/s readable, job {stream.job.seconds:.1f} s (JVM start included)")
    assert all(f > 0 for f in fresh)           # readable after the event, never before: the clocks are one


def test_a_feature_server_that_does_not_answer_fails_the_job_naming_it(runs):
    returncode, out = runs.failed.returncode, runs.failed.output
    assert returncode == 1, out[-3000:]
    line = next((ln for ln in out.splitlines() if ln.startswith("workloads.streaming.job:")), out[-2000:])
    assert "job failed: PushError: feature view item-stats: push of" in line and "failed after 2 tries" in line
    assert "https://127.0.0.1:" in line and "Connection refused" in line


def test_bad_arguments_exit_2_in_the_job_environment(view, runs):
    rig = runs.rig
    args = rig.config(view, 3, 1.0).to_args()
    args[args.index("--features") + 1] = "visits_1h:int64,blob:bytes"
    res = subprocess.run([str(flink_rig.flink_venv() / "bin" / "python"), "-m", "workloads.streaming.job", *args],
                         cwd=flink_rig.REPO_ROOT, env=rig.job_env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == ("workloads.streaming.job: bad argument --features: blob: type 'bytes' cannot be pushed as "
                                  "JSON (supported: bool, int32, int64, float32, float64, string and their _list forms)")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
