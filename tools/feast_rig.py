"""Real Feast on real Redis, on loopback: the rig behind tests/workloads/test_feast_real.py and scripts/bench_feast.py.

Runs in the project's venv and drives Feast (installed apart, in .venv-feast by scripts/feast_venv.sh) through
subprocesses: `feast apply`, `feast serve`, and tools/feast_worker.py for data, materialization and SDK reads.
Redis is Debian's `redis-server`, started here with the very configuration files and TLS options the cluster gets
(`workloads.render.redis_sentinel`), only bound to 127.0.0.1 on free ports: a primary, a replica and three
Sentinels, TLS only, with certificates of a throwaway CA (tools/throwaway_ca.py) laid out as the cluster's
cert-manager Secret is. Feast reaches them with the cluster's online-store string (`feature_store.online_store`).
Everything it starts it stops (`Rig.close`, also on failure).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from infra.spec import FeatureView
from tools.throwaway_ca import CA
from workloads.render import feast_repo, feature_store
from workloads.render import redis_sentinel as rs

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER = REPO_ROOT / "tools" / "feast_worker.py"
PASSWORD = "rig-Password_0123456789abcdefghij"
"""A fixed loopback password (the shape of workloads.secrets.derive's output)."""
DOWN_AFTER_MS = 1000
"""The rig's Sentinels declare a primary down after 1 s (the cluster's: redis_sentinel.DOWN_AFTER_MS)."""


def feast_venv() -> Path:
    return Path(os.environ.get("HYBRIDML_FEAST_VENV", REPO_ROOT / ".venv-feast"))


def missing() -> list[str]:
    """What the rig lacks on this machine, each with how to get it (empty: ready)."""
    out = []
    if not (feast_venv() / "bin" / "feast").exists():
        out.append(f"no Feast virtualenv at {feast_venv()} (run scripts/feast_venv.sh)")
    if shutil.which("redis-server") is None:
        out.append("no redis-server on PATH (apt-get install -y redis-server, then `service redis-server stop`)")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shape(view: FeatureView, path: str, rows: int) -> dict:
    """What tools/feast_worker.py needs to know of a view: keys, typed features, rows, its parquet path."""
    return {"view": feast_repo.project(view.name), "entities": [[e.key, e.value_type] for e in view.entities],
            "features": [[f.name, f.dtype, f.length] for f in view.features], "rows": rows, "path": path,
            "timestamp_field": view.source.timestamp_field if view.source else "event_timestamp",
            "created_field": view.source.created_timestamp_field if view.source else None,
            "push": feast_repo.push_source_name(view.name) if view.streaming else None}


class RigError(RuntimeError):
    pass


@dataclass
class Rig:
    """One working directory: Redis processes, the generated repository and the Feast processes on top."""

    workdir: Path
    views: list[FeatureView]
    rows: int = 2000
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    logs: list[Path] = field(default_factory=list)

    @property
    def repo(self) -> Path:
        return self.workdir / "repo"

    @property
    def tls(self) -> Path:
        """The view's certificate, as the cluster's Secret mounts it (tls.crt, tls.key, ca.crt)."""
        return self.workdir / "tls"

    def feast_env(self) -> dict[str, str]:
        """Feast's environment: the cluster's TLS settings (SSL_CERT_FILE: the CA for the Sentinel connections)."""
        return {**os.environ, **{e["name"]: e["value"] for e in feature_store.feast_tls_env(str(self.tls))}}

    # ---- processes
    def _start(self, name: str, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = self.workdir / f"{name}.log"
        self.logs.append(log)
        with open(log, "wb") as fh:
            proc = subprocess.Popen(argv, cwd=cwd or self.workdir, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env)
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=10)

    def close(self) -> None:
        for name in list(self.procs):
            try:
                self.kill(name, signal.SIGTERM)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.kill(name)

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for log in self.logs:
            if log.exists():
                text = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)

    # ---- Redis: primary, replica, three Sentinels (quorum 2), the cluster's configuration files
    def redis_cli(self, port: int, *args: str) -> str:
        res = subprocess.run(["redis-cli", *rs.cli_tls(str(self.tls)).split(), "--no-auth-warning", "-a", PASSWORD,
                              "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True, text=True, timeout=10)
        return res.stdout.strip()

    def start_redis(self) -> None:
        view = self.views[0]
        CA().issue(self.tls, "redis-rig")   # what cert-manager puts in the view's Secret; SANs localhost, 127.0.0.1
        for role in ("primary", "replica"):
            port = self.ports[role] = free_port()
            data = self.workdir / role
            data.mkdir(exist_ok=True)
            # the cluster's file and TLS options; only where it listens and keeps its data differ
            conf = data / "redis.conf"
            conf.write_text(rs.redis_conf(view, PASSWORD).replace("bind 0.0.0.0\n", "bind 127.0.0.1\n")
                            .replace("dir /data\n", f"dir {data}\n"))
            extra = ["--replicaof", "127.0.0.1", str(self.ports["primary"])] if role == "replica" else []
            self._start(role, ["redis-server", str(conf), *rs.tls_args(port, str(self.tls)), "--replica-announce-ip",
                               "127.0.0.1", *extra])
        for i in range(3):
            port = self.ports[f"sentinel{i}"] = free_port()
            text = (rs.sentinel_conf(PASSWORD).replace(f"dir {rs.WORK_DIR}", f"dir {self.workdir}")
                    + f"bind 127.0.0.1\nsentinel myid {rs.sentinel_myid(f'127.0.0.1:{port}')}\n"
                    + "sentinel announce-ip 127.0.0.1\n" + rs.sentinel_monitor(view, "127.0.0.1", self.ports["primary"])
                    + rs.sentinel_master_conf(view, PASSWORD, down_after_ms=DOWN_AFTER_MS, failover_timeout_ms=5000))
            path = self.workdir / f"sentinel{i}.conf"
            path.write_text(text)
            self._start(f"sentinel{i}", ["redis-server", str(path), "--sentinel",
                                         *rs.tls_args(port, str(self.tls), sentinel=True)])
        self._wait(lambda: self.redis_cli(self.ports["primary"], "ping") == "PONG", "redis primary", proc="primary")
        self._wait(lambda: "master_link_status:up" in self.redis_cli(self.ports["replica"], "info", "replication"),
                   "the replica's link to the primary")
        for i in range(3):
            self._wait(lambda i=i: self._sentinels_seen(i) >= 2, f"sentinel{i} to see the other two")

    def _sentinels_seen(self, i: int) -> int:
        out = self.redis_cli(self.ports[f"sentinel{i}"], "sentinel", "master", rs.master_name(self.views[0]))
        lines = out.splitlines()
        return int(lines[lines.index("num-other-sentinels") + 1]) if "num-other-sentinels" in lines else 0

    def used_memory(self) -> int:
        info = self.redis_cli(self.master_port(), "info", "memory")
        return int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("used_memory:")))

    def master_port(self) -> int:
        out = self.redis_cli(self.ports["sentinel0"], "sentinel", "get-master-addr-by-name", rs.master_name(self.views[0]))
        return int(out.splitlines()[1])

    def sync_replica(self) -> None:
        """Wait until the replica has every write of the primary (before a failover that should lose nothing)."""
        acked = self.redis_cli(self.master_port(), "wait", "1", "5000")
        if acked != "1":
            raise RigError(f"replica did not acknowledge the writes (WAIT answered {acked!r})")

    def online_store(self) -> dict:
        """The cluster's online_store (Sentinel, TLS), pointed at the loopback Sentinels and the rig's certificate."""
        store = feature_store.online_store(self.views[0], "", PASSWORD, tls_dir=str(self.tls),
                                           sentinels=[f"127.0.0.1:{self.ports[f'sentinel{i}']}" for i in range(3)])
        return {k: v for k, v in store.items() if k != "key_ttl_seconds"}

    # ---- the repository and Feast
    def shapes(self) -> list[dict]:
        return [shape(v, str(self.workdir / "data" / f"{v.name}.parquet"), self.rows) for v in self.views]

    def write_repo(self, env_name: str = "local") -> None:
        """One repository holding every view (one Feast project, as the test needs one server for all)."""
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        self.repo.mkdir(parents=True, exist_ok=True)
        store = self.online_store()
        for i, v in enumerate(self.views):
            local = v.model_copy(update={"source": (v.source or feast_repo.batch_source(v, env_name)).model_copy(
                update={"path": str(self.workdir / "data" / f"{v.name}.parquet")})})
            files = feast_repo.repo_files(local, env_name, store, registry=str(self.workdir / "registry.db"))
            (self.repo / f"{feast_repo.project(v.name)}.py").write_text(files[feast_repo.DEFINITIONS])
            if i == 0:
                yaml_text = files[feast_repo.FEATURE_STORE_YAML].replace(
                    f"project: {feast_repo.project(v.name)}", "project: hybridml_rig")
                (self.repo / feast_repo.FEATURE_STORE_YAML).write_text(yaml_text)

    def feast(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        res = subprocess.run([str(feast_venv() / "bin" / "feast"), *args], cwd=self.repo, capture_output=True, text=True,
                             timeout=timeout, env=self.feast_env())
        if res.returncode:
            raise RigError(f"feast {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
        return res

    def worker(self, command: str, request: dict, timeout: float = 180) -> dict:
        req = {"repo": str(self.repo), **request}
        res = subprocess.run([str(feast_venv() / "bin" / "python"), str(WORKER), command], input=json.dumps(req),
                             capture_output=True, text=True, timeout=timeout, cwd=self.repo, env=self.feast_env())
        if res.returncode:
            raise RigError(f"feast_worker {command} failed ({res.returncode}):\n{res.stderr[-3000:]}")
        return dict(json.loads(res.stdout.splitlines()[-1]))

    def serve(self, name: str = "serve", *, timed: bool = False) -> str:
        """`feast serve` (or, timed, the same app with a timing middleware) on a free loopback port; its URL."""
        port = self.ports[name] = free_port()
        if timed:
            argv = [str(feast_venv() / "bin" / "python"), str(WORKER), "serve", json.dumps({"repo": str(self.repo), "port": port})]
        else:
            argv = [str(feast_venv() / "bin" / "feast"), "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log",
                    "-w", "1", "-r", "600"]
        self._start(name, argv, cwd=self.repo, env=self.feast_env())
        url = f"http://127.0.0.1:{port}"
        self._wait(lambda: _get(url + "/health") == 200, f"{name} on {url}", timeout=90, proc=name)
        return url

    def _wait(self, ready, what: str, timeout: float = 30, proc: str | None = None) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if proc and self.procs[proc].poll() is not None:
                raise RigError(f"{what}: process exited ({self.procs[proc].returncode})\n{self.log_tail()}")
            try:
                if ready():
                    return
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            time.sleep(0.1)
        raise RigError(f"timed out after {timeout:g} s waiting for {what}\n{self.log_tail()}")


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL built here
        return int(resp.status)


def post_json(url: str, body: dict, timeout: float = 10) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback URL built here
            return int(resp.status), dict(json.loads(resp.read() or b"{}"))
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            return exc.code, dict(json.loads(text))
        except ValueError:
            return exc.code, {"detail": text}

