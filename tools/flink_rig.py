"""The streaming job for real, on loopback: the rig behind tests/workloads/test_flink_job.py and
scripts/bench_streaming.py.

On top of tools/feast_rig.py (Debian's redis-server with the cluster's files, TLS only, Sentinels; the generated
Feast repository; `feast apply`) it serves Feast's feature server over https (`feast serve --key --cert`, the rig's
throwaway-CA certificate, as the cluster's `server.tls`), then runs the shipped PyFlink job
(`python -m workloads.streaming.job` in .venv-flink, scripts/flink_venv.sh; a local Flink MiniCluster on the
Debian JRE) with the arguments of the FlinkDeployment rendered for the view (`rendered_args`), changed only where
the loopback differs: the source becomes the bounded synthetic stream, the feature server and CA the rig's.
Meanwhile tools/stream_watch.py (in .venv-feast) polls the online store and notes when each row became readable.
For the Kafka path (tests/workloads/test_flink_kafka.py) the source stays Kafka, pointed at tools/kafka_rig.py's
loopback broker (`kafka_config`), and the job gets Flink's lib with the Kafka connector jar (`flink_lib`);
`PushTap` sits in front of the feature server and counts what is pushed. Everything it starts it stops.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from infra.spec import FeatureView
from tools import feast_rig
from workloads.render import feature_store, flink
from workloads.streaming import rows as stream_rows
from workloads.streaming.config import JobConfig, parse_args

REPO_ROOT = feast_rig.REPO_ROOT
WATCH = REPO_ROOT / "tools" / "stream_watch.py"
NAMESPACE = "ml-local"
FIRST_ENTITY = 5_000_000
"""Streamed entities are numbered from here, apart from what a test materialized."""
QUICK_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
"""For short local runs: the client compiler only and one GC thread start the local Flink in about half the time."""


def flink_venv() -> Path:
    return Path(os.environ.get("HYBRIDML_FLINK_VENV", REPO_ROOT / ".venv-flink"))


def missing() -> list[str]:
    """What the rig lacks on this machine, each with how to get it (empty: ready)."""
    out = feast_rig.missing()
    if not (flink_venv() / "bin" / "python").exists():
        out.append(f"no PyFlink virtualenv at {flink_venv()} (run scripts/flink_venv.sh)")
    if shutil.which("java") is None:
        out.append("no java on PATH (apt-get install -y openjdk-17-jre-headless)")
    return out


def rendered_args(view: FeatureView, namespace: str = NAMESPACE) -> list[str]:
    """The job's arguments as the rendered FlinkDeployment passes them (after PythonDriver's `-pym <module>`)."""
    ctx_objects = feature_store.flink_objects(_context(), view, namespace)
    job = next(o for o in ctx_objects if o["kind"] == "FlinkDeployment")["spec"]["job"]
    args = list(job["args"])
    if job["entryClass"] != flink.PYTHON_DRIVER or args[:2] != ["-pym", flink.JOB_MODULE]:
        raise feast_rig.RigError(f"the FlinkDeployment does not run {flink.JOB_MODULE} through PyFlink's driver: {job}")
    return args[2:]


def _context():
    from workloads.render.context import SiteContext

    return SiteContext(env_name="local", site="loopback", site_kind="datacenter", domain="local.example")


def kafka_config(view: FeatureView, url: str, tls_dir: Path, bootstrap: str, **changes: Any) -> JobConfig:
    """The rendered configuration, pointed at the loopback broker (tools/kafka_rig.py) and the rig's feature server and
    CA; the rendered topic, consumer group and Kafka source stay."""
    cfg = parse_args(rendered_args(view))
    local = {"kafka_bootstrap_servers": (bootstrap,), "feature_server": url, "tls_ca": str(tls_dir / "ca.crt")}
    return dataclasses.replace(cfg, **(local | changes))


def local_config(view: FeatureView, url: str, tls_dir: Path, rows: int, rate: float, **changes: Any) -> JobConfig:
    """The rendered configuration, pointed at the loopback: synthetic source, the rig's feature server and CA."""
    cfg = parse_args(rendered_args(view))
    local: dict[str, Any] = {"source": "synthetic", "kafka_bootstrap_servers": (), "kafka_topic": None, "kafka_group": None,
                             "feature_server": url, "tls_ca": str(tls_dir / "ca.crt"), "synthetic_rows": rows,
                             "synthetic_rate": rate, "synthetic_first": FIRST_ENTITY}
    return dataclasses.replace(cfg, **(local | changes))


def stop_groups(*procs: subprocess.Popen | None) -> None:
    """SIGKILL the process group (started with start_new_session) of each process still running, and reap it."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@dataclass
class JobRun:
    returncode: int
    output: str
    seconds: float
    log_dir: Path | None = None        # the local Flink's log (where the job's Python logging goes in thread mode)

    def flink_log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log"))) if self.log_dir else ""


@dataclass
class Stream:
    """One bounded stream through the job: what the watcher saw and how the job ended."""

    cfg: JobConfig
    job: JobRun
    seen: list[list[float]]            # [entity, first seen (wall), event time]
    missing_count: int
    polls: int
    fresh_from: float = 0.0            # the watcher was polling from then: earlier events' freshness is not measured

    @property
    def freshness_ms(self) -> list[float]:
        """Event time -> first seen readable, per row due after the watcher was ready; sorted."""
        return sorted((s - e) * 1000 for _, s, e in self.seen if e >= self.fresh_from)

    @property
    def rows_per_s(self) -> float:
        """Rows readable per second, from the first row readable to the last."""
        if len(self.seen) < 2:
            return 0.0
        return (len(self.seen) - 1) / (max(s for _, s, _ in self.seen) - min(s for _, s, _ in self.seen))


@dataclass
class StreamRig:
    workdir: Path
    views: list[FeatureView]
    url: str = ""
    jobs: int = 0
    base: feast_rig.Rig = field(init=False)

    def __post_init__(self) -> None:
        self.base = feast_rig.Rig(self.workdir, self.views, rows=0)

    def start(self) -> None:
        self.base.start_redis()    # also lays out the rig's certificates (tls/)
        self.start_feast()

    def start_feast(self) -> None:
        self.base.write_repo()
        self.base.feast("apply")
        self.url = self.serve_tls()

    def close(self) -> None:
        self.base.close()

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.base.tls / "ca.crt"))

    def serve_tls(self, name: str = "serve-tls") -> str:
        """`feast serve` over https with the rig's certificate (SANs localhost, 127.0.0.1), one worker."""
        port = self.base.ports[name] = feast_rig.free_port()
        tls = self.base.tls
        self.base._start(name, [str(feast_rig.feast_venv() / "bin" / "feast"), "serve", "-h", "127.0.0.1", "-p", str(port),
                                "--no-access-log", "-w", "1", "-r", "600", "-k", str(tls / "tls.key"), "-c", str(tls / "tls.crt")],
                         cwd=self.base.repo, env=self.base.feast_env())
        self.base._wait(lambda: self.request("GET", "/health", port=port)[0] == 200, f"{name} on port {port}", timeout=90, proc=name)
        return f"https://127.0.0.1:{port}"

    def request(self, method: str, path: str, body: dict | None = None, port: int | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection("127.0.0.1", port or int(self.url.rsplit(":", 1)[1]), timeout=10,
                                           context=self.ssl_context())
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
            return resp.status, (json.loads(text) if text.startswith(("{", "[")) else text)
        finally:
            conn.close()

    # ---- the job
    def config(self, view: FeatureView, rows: int, rate: float, **changes: Any) -> JobConfig:
        return local_config(view, self.url, self.base.tls, rows, rate, **changes)

    def job_env(self, jvm_args: str = "", kafka: bool = False, log_dir: Path | None = None) -> dict[str, str]:
        """Thread mode runs Python inside the JVM: it finds PyFlink (pemja) and the job's package on PYTHONPATH.
        `jvm_args` go to the local JVM (the test passes QUICK_JVM). A Kafka job gets `flink_lib` as Flink's lib.
        `log_dir`: where the local Flink writes its log (else PyFlink's own folder in the venv)."""
        site = next((flink_venv() / "lib").glob("python3*/site-packages"))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(site)]), "PYTHONUNBUFFERED": "1",
               "JVM_ARGS": jvm_args}
        if log_dir is not None:
            env["FLINK_LOG_DIR"] = str(log_dir)
        if kafka:   # PyFlink's launcher takes FLINK_LIB_DIR only beside FLINK_HOME (else it sets both to its own)
            env |= {"FLINK_HOME": str(site / "pyflink"), "FLINK_LIB_DIR": str(self.flink_lib())}
        return env

    def flink_lib(self) -> Path:
        """Flink's lib folder as the job image has it: PyFlink's jars plus the Kafka connector jar (tools/kafka_rig.py);
        PyFlink's launcher puts every jar of `FLINK_LIB_DIR` on the local JVM's classpath."""
        from tools import kafka_rig

        lib = self.workdir / "flink-lib"
        if not lib.exists():
            lib.mkdir()
            site = next((flink_venv() / "lib").glob("python3*/site-packages"))
            for jar in [*(site / "pyflink" / "lib").glob("*.jar"), kafka_rig.connector_jar()]:
                (lib / jar.name).symlink_to(jar)
        return lib

    def start_job(self, cfg: JobConfig, jvm_args: str = "") -> subprocess.Popen:
        """The job in its own process group, its Flink log in a folder of its own (`JobRun.log_dir`)."""
        argv = [str(flink_venv() / "bin" / "python"), "-m", flink.JOB_MODULE, *cfg.to_args()]
        self.jobs += 1
        log_dir = self.workdir / "flink-log" / f"job-{self.jobs}"
        log_dir.mkdir(parents=True)
        proc = subprocess.Popen(argv, cwd=self.workdir, env=self.job_env(jvm_args, cfg.source == "kafka", log_dir),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        proc.flink_log_dir = log_dir  # type: ignore[attr-defined]
        return proc

    @staticmethod
    def finish_job(proc: subprocess.Popen, started: float, timeout: float = 120) -> JobRun:
        try:
            out, _ = proc.communicate(timeout=max(1.0, started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, _ = proc.communicate()
            raise feast_rig.RigError(f"the job ran past {timeout:g} s\n{out[-3000:]}") from None
        return JobRun(proc.returncode, out, time.monotonic() - started, getattr(proc, "flink_log_dir", None))

    def spawn_watcher(self) -> subprocess.Popen:
        """tools/stream_watch.py, importing Feast until `stream` hands it its request."""
        return subprocess.Popen([str(feast_rig.feast_venv() / "bin" / "python"), str(WATCH)], cwd=self.workdir,
                                env=self.base.feast_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    def stream(self, view: FeatureView, cfg: JobConfig, *, poll_ms: float = 5, job_timeout: float = 120,
               jvm_args: str = "", watcher: subprocess.Popen | None = None, meter: CpuMeter | None = None) -> Stream:
        """Run the job on its bounded stream while the watcher (`spawn_watcher`, early if the caller has time to
        overlap) notes when each row becomes readable online; the job starts once the watcher is ready."""
        req = {"repo": str(self.base.repo), "view": feast_repo_project(view), "key": [cfg.keys[0].name, cfg.keys[0].dtype],
               "feature": cfg.features[0].name, "first": cfg.synthetic_first, "rows": cfg.synthetic_rows, "poll_ms": poll_ms,
               "window": 256, "deadline_s": job_timeout + 30}
        watcher = watcher or self.spawn_watcher()
        job: subprocess.Popen | None = None
        try:
            assert watcher.stdin and watcher.stdout and watcher.stderr
            watcher.stdin.write(json.dumps(req) + "\n")
            watcher.stdin.flush()
            ready = watcher.stdout.readline()
            if ready.strip() != "ready":
                raise feast_rig.RigError(f"stream watcher did not start: {ready}{watcher.stderr.read()[-2000:]}")
            ready_at, started = time.time(), time.monotonic()
            job = self.start_job(cfg, jvm_args)
            if meter is not None:
                meter.watch("job", job.pid)
                meter.watch("watcher", watcher.pid)
                meter.start()
            run = self.finish_job(job, started, job_timeout)
            if run.returncode != 0:
                return Stream(cfg, run, [], cfg.synthetic_rows, 0)
            out, err = watcher.communicate(timeout=30)
        finally:
            stop_groups(job, watcher)
        if watcher.returncode:
            raise feast_rig.RigError(f"stream watcher failed ({watcher.returncode}): {err[-2000:]}")
        answer = json.loads(out.strip().splitlines()[-1])
        return Stream(cfg, run, answer["seen"], answer["missing_count"], answer["polls"], fresh_from=ready_at)

    def read_back(self, view: FeatureView, cfg: JobConfig, entities: list[int]) -> tuple[int, dict[str, list]]:
        """Every feature of `entities` through the feature server over https: (status, {feature: values})."""
        key = cfg.keys[0]
        body = {"features": [f"{feast_repo_project(view)}:{c.name}" for c in cfg.features],
                "entities": {key.name: [stream_rows.entity_key(key, n) for n in entities]}}
        status, answer = self.request("POST", "/get-online-features", body)
        if status != 200:
            return status, {"detail": [answer]}
        return status, {n: r["values"] for n, r in zip(answer["metadata"]["feature_names"], answer["results"], strict=True)}


class PushTap:
    """A TLS pass-through in front of the feature server that notes every row of every acknowledged `/push`:
    (entity key, event time, time acknowledged). How often each row was pushed (at-least-once: a restart pushes some
    again) and when it became readable (the feature server answers 200 once the rows are in Redis). Serves the rig's
    certificate on 127.0.0.1, forwards each request to `rig.url` as it came."""

    def __init__(self, rig: StreamRig, key: str, timestamp_field: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.pushes: list[tuple[Any, float, float]] = []
        self.lock = threading.Lock()
        upstream = threading.local()
        tap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, text = tap._forward(upstream, rig, self.path, body)
                if status == 200 and self.path == "/push":
                    done = time.time()
                    df = json.loads(body)["df"]
                    with tap.lock:
                        tap.pushes += [(k, datetime.fromisoformat(t).timestamp(), done)
                                       for k, t in zip(df[key], df[timestamp_field], strict=True)]
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(rig.base.tls / "tls.crt"), str(rig.base.tls / "tls.key"))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def _forward(upstream: threading.local, rig: StreamRig, path: str, body: bytes) -> tuple[int, str]:
        for attempt in range(2):    # a kept-alive upstream connection the server closed: once more on a new one
            if getattr(upstream, "conn", None) is None:
                upstream.conn = http.client.HTTPSConnection("127.0.0.1", int(rig.url.rsplit(":", 1)[1]), timeout=30,
                                                            context=rig.ssl_context())
            try:
                upstream.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                resp = upstream.conn.getresponse()
                return resp.status, resp.read().decode(errors="replace")
            except (OSError, http.client.HTTPException) as exc:
                upstream.conn.close()
                upstream.conn = None
                if attempt:
                    return 502, f"push tap: feature server unreachable: {exc}"
        raise AssertionError("unreachable")

    def counts(self) -> dict[Any, int]:
        with self.lock:
            out: dict[Any, int] = {}
            for key, _, _ in self.pushes:
                out[key] = out.get(key, 0) + 1
            return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def group_cpu_seconds(pgid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every live process of process group `pgid`, by pid (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:           # fields after the name: state, ppid, pgrp, ..., utime (12), stime (13)
            out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


class CpuMeter:
    """CPU seconds of process groups while something runs: sampled every `interval` s, each pid's last sample kept, so
    a process that exits loses at most one interval."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.groups: dict[str, int] = {}
        self.seen: dict[str, dict[int, float]] = {}
        self.base: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, name: str, pgid: int) -> None:
        self.groups[name] = pgid
        self.seen[name] = group_cpu_seconds(pgid)
        self.base[name] = sum(self.seen[name].values())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name, pgid in list(self.groups.items()):
                self.seen[name].update(group_cpu_seconds(pgid))

    def start(self) -> CpuMeter:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        for name, pgid in self.groups.items():
            self.seen[name].update(group_cpu_seconds(pgid))
        return {name: sum(self.seen[name].values()) - self.base[name] for name in self.groups}


def feast_repo_project(view: FeatureView) -> str:
    from workloads.render import feast_repo

    return feast_repo.project(view.name)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted `values`."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, int(round(q / 100 * len(values) + 0.5)) - 1))]


if __name__ == "__main__":   # a quick look: python -m tools.flink_rig VIEW ROWS RATE
    from infra.loader import load_environment

    name, n, r = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    target = next(v for v in load_environment("local").feature_views if v.name == name)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        sr = StreamRig(Path(tmp), [target])
        try:
            sr.start()
            result = sr.stream(target, sr.config(target, n, r))
            fr = result.freshness_ms
            print(f"rc={result.job.returncode} job={result.job.seconds:.1f}s seen={len(result.seen)} missing={result.missing_count} "
                  f"p50={percentile(fr, 50):.1f}ms p99={percentile(fr, 99):.1f}ms rows/s={result.rows_per_s:.0f}")
            if result.job.returncode:
                print(result.job.output[-3000:])
        finally:
            sr.close()
