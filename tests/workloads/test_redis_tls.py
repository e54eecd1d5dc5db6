"""The online store's TLS on a REAL redis-server (Debian's, on loopback): the rendered redis.conf and sentinel.conf
with the rendered TLS options (workloads/render/redis_sentinel.py `tls_args`), certificates of a throwaway CA made
here (tools/throwaway_ca.py, laid out as cert-manager's Secret). A client with a certificate of the fleet CA gets
in; plaintext, TLS without a client certificate, and a certificate of another CA are refused; a replica follows its
primary over TLS; a Sentinel serves TLS, lets anyone discover the primary and only its `admin` reconfigure it; and
redis-py (the client Feast uses) reaches Redis through the Sentinels with the cluster's connection string.
Outside CI a missing redis-server skips (with the reason printed); with CI=true it fails."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from infra.loader import load_environment
from tests.conftest import require
from tools.feast_rig import feast_venv, free_port
from tools.throwaway_ca import CA
from workloads.render import feature_store
from workloads.render import redis_sentinel as rs

PASSWORD = "tls-Password_0123456789abcdefghij"


def _cli(tls: Path | None, port: int, *args: str, cert: Path | None = None, password: str | None = PASSWORD) -> subprocess.CompletedProcess:
    argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--no-auth-warning"]
    if tls is not None:
        argv += ["--tls", "--cacert", str(tls / "ca.crt")]
        if cert is not None:
            argv += ["--cert", str(cert / "tls.crt"), "--key", str(cert / "tls.key")]
    if password:
        argv += ["-a", password]
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=10)


def _wait(check, what: str, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    require(shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None,
            "no redis-server/redis-cli on PATH (apt-get install -y redis-server)")
    work = Path(tmp_path_factory.mktemp("redis-tls"))
    ca = CA("fleet CA")
    tls = ca.issue(work / "tls", "redis-user-profile")          # the view's Secret: tls.crt, tls.key, ca.crt
    client = ca.issue(work / "client", "a-pipeline")            # a reader's own certificate of the fleet CA
    intruder = CA("another CA").issue(work / "intruder", "intruder")
    view = next(v for v in load_environment("local").feature_views if v.name == "user-profile")
    procs: list[subprocess.Popen] = []
    ports = {"primary": free_port(), "replica": free_port(), "sentinel": free_port()}

    def start(name: str, argv: list[str]) -> None:
        log = open(work / f"{name}.log", "wb")   # noqa: SIM115 - kept open for the process's life
        procs.append(subprocess.Popen(argv, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    try:
        for role in ("primary", "replica"):
            data = work / role
            data.mkdir()
            conf = data / "redis.conf"
            conf.write_text(rs.redis_conf(view, PASSWORD).replace("bind 0.0.0.0\n", "bind 127.0.0.1\n")
                            .replace("dir /data\n", f"dir {data}\n"))
            extra = ["--replicaof", "127.0.0.1", str(ports["primary"])] if role == "replica" else []
            start(role, ["redis-server", str(conf), *rs.tls_args(ports[role], str(tls)), *extra])
        sentinel = work / "sentinel.conf"
        sentinel.write_text(rs.sentinel_conf(PASSWORD).replace(f"dir {rs.WORK_DIR}", f"dir {work}") + "bind 127.0.0.1\n"
                            + "sentinel announce-ip 127.0.0.1\n" + rs.sentinel_monitor(view, "127.0.0.1", ports["primary"])
                            + rs.sentinel_master_conf(view, PASSWORD))
        start("sentinel", ["redis-server", str(sentinel), "--sentinel", *rs.tls_args(ports["sentinel"], str(tls), sentinel=True)])
        _wait(lambda: _cli(tls, ports["primary"], "ping", cert=client).stdout.strip() == "PONG", "the primary over TLS")
        _wait(lambda: "master_link_status:up" in _cli(tls, ports["replica"], "info", "replication", cert=client).stdout,
              "the replica's TLS link to the primary")
        yield {"tls": tls, "client": client, "intruder": intruder, "ports": ports, "view": view, "work": work}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
    assert all(p.poll() is not None for p in procs)


def test_the_rendered_redis_listens_only_on_tls():
    args = rs.tls_args(rs.REDIS_PORT)
    assert args[:4] == ["--port", "0", "--tls-port", "6379"]
    assert "port 6379" not in rs.redis_conf(next(iter(load_environment("local").feature_views)), "x")
    sentinel = rs.tls_args(rs.SENTINEL_PORT)
    assert sentinel[:4] == ["--port", "0", "--tls-port", "26379"] and "--tls-auth-clients" in sentinel


def test_a_client_with_a_fleet_certificate_gets_in(redis):
    r = _cli(redis["tls"], redis["ports"]["primary"], "set", "k", "v", cert=redis["client"])
    assert r.stdout.strip() == "OK", r.stderr
    assert _cli(redis["tls"], redis["ports"]["primary"], "get", "k", cert=redis["client"]).stdout.strip() == "v"


def test_plaintext_is_refused(redis):
    for port in redis["ports"].values():
        r = _cli(None, port, "ping")
        assert r.stdout.strip() != "PONG", (port, r.stdout)
    # at the socket: a plaintext PING gets no answer (the server expects a TLS handshake and drops the connection)
    with socket.create_connection(("127.0.0.1", redis["ports"]["primary"]), timeout=5) as s:
        s.sendall(b"PING\r\n")
        try:
            assert s.recv(64) == b""
        except ConnectionResetError:
            pass


def test_tls_without_a_client_certificate_or_with_another_ca_is_refused(redis):
    port = redis["ports"]["primary"]
    assert _cli(redis["tls"], port, "ping").stdout.strip() != "PONG"
    assert _cli(redis["tls"], port, "ping", cert=redis["intruder"]).stdout.strip() != "PONG"
    # nor does the client accept a server it cannot verify: python's ssl against the wrong CA
    ctx = ssl.create_default_context(cafile=str(redis["intruder"] / "ca.crt"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(raw, server_hostname="localhost")


def test_the_replica_follows_over_tls(redis):
    ports, tls, client = redis["ports"], redis["tls"], redis["client"]
    _cli(tls, ports["primary"], "set", "replicated", "yes", cert=client)
    _wait(lambda: _cli(tls, ports["replica"], "get", "replicated", cert=client).stdout.strip() == "yes", "replication")


def test_the_sentinel_serves_tls_discovery_to_anyone_and_reconfiguration_to_admin(redis):
    port, tls = redis["ports"]["sentinel"], redis["tls"]
    master = rs.master_name(redis["view"])
    _wait(lambda: _cli(tls, port, "sentinel", "get-master-addr-by-name", master, password=None).stdout.split()[:1]
          == ["127.0.0.1"], "the Sentinel to name the primary")
    assert _cli(None, port, "ping", password=None).stdout.strip() != "PONG"            # no plaintext
    denied = _cli(tls, port, "sentinel", "set", master, "quorum", "1", password=None)
    assert "NOPERM" in denied.stdout + denied.stderr
    admin = _cli(tls, port, "--user", rs.SENTINEL_ADMIN, "--pass", PASSWORD, "sentinel", "master", master, password=None)
    assert admin.stdout.split()[:2] == ["name", master], admin.stdout + admin.stderr


def test_redis_py_reaches_redis_through_the_sentinels_with_the_clusters_connection_string(redis):
    """The online-store string Feast gets in the cluster (TLS to Redis with the client certificate, TLS to the
    Sentinels), parsed as Feast parses it, run by the redis-py of the Feast venv."""
    python = feast_venv() / "bin" / "python"
    require(python.exists(), f"no Feast virtualenv at {feast_venv()} (run scripts/feast_venv.sh)")
    store = feature_store.online_store(redis["view"], "", PASSWORD, tls_dir=str(redis["client"]),
                                       sentinels=[f"127.0.0.1:{redis['ports']['sentinel']}"])
    script = f"""
import json
from feast.infra.online_stores.redis import RedisOnlineStore
from redis.sentinel import Sentinel
nodes, kwargs = RedisOnlineStore._parse_connection_string({store['connection_string']!r})
master = Sentinel([(n["host"], int(n["port"])) for n in nodes], **kwargs).master_for({store['sentinel_master']!r})
master.set("via-sentinel", "ok")
print(json.dumps({{"value": master.get("via-sentinel").decode(), "ssl": kwargs["sentinel_kwargs"]}}))
"""
    env = {e["name"]: e["value"] for e in feature_store.feast_tls_env(str(redis["client"]))}
    res = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", **env})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == '{"value": "ok", "ssl": {"ssl": true}}'


def _served_serial(port: int, tls: Path, client: Path) -> str:
    ctx = ssl.create_default_context(cafile=str(tls / "ca.crt"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(client / "tls.crt"), str(client / "tls.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as conn:
        return conn.getpeercert()["serialNumber"]


def test_a_renewed_certificate_is_served_without_a_restart_and_a_sentinel_restarts_for_it(tmp_path):
    """cert-manager renews the view's certificate in place: the rendered watcher makes the running Redis load it
    (CONFIG SET through the renamed CONFIG, the process stays), and ends the Sentinel (no runtime TLS reload) so the
    kubelet starts it with the new files."""
    require(shutil.which("redis-server") is not None, "no redis-server on PATH (apt-get install -y redis-server)")
    ca = CA("fleet CA")
    tls = ca.issue(tmp_path / "tls", "redis-user-profile")
    client = ca.issue(tmp_path / "client", "a-pipeline")
    auth = tmp_path / "auth"
    auth.mkdir()
    (auth / "password").write_text(PASSWORD)
    view = next(v for v in load_environment("local").feature_views if v.name == "user-profile")
    (tmp_path / "redis.conf").write_text(rs.redis_conf(view, PASSWORD).replace("bind 0.0.0.0\n", "bind 127.0.0.1\n")
                                         .replace("dir /data\n", f"dir {tmp_path}\n"))
    (tmp_path / "sentinel.conf").write_text(f"dir {tmp_path}\nbind 127.0.0.1\n" + rs.sentinel_monitor(view, "127.0.0.1", 1))
    port, sentinel_port = free_port(), free_port()
    redis_sh = (rs.cert_watch(rs.redis_cert_reload(port, str(tls), str(auth)), str(tls), every=0.2)
                + f"exec redis-server {tmp_path}/redis.conf {' '.join(rs.tls_args(port, str(tls)))}\n")
    sentinel_sh = ('self="sentinel-0"\n' + rs.cert_watch(rs.sentinel_cert_restart(spread_s=1), str(tls), every=0.2)
                   + f"exec redis-server {tmp_path}/sentinel.conf --sentinel "
                   + " ".join(rs.tls_args(sentinel_port, str(tls), sentinel=True)) + "\n")
    procs = [subprocess.Popen(["sh", "-c", script], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True) for script in (redis_sh, sentinel_sh)]
    redis_proc, sentinel_proc = procs
    try:
        _wait(lambda: _cli(tls, port, "ping", cert=client).stdout.strip() == "PONG", "Redis over TLS")
        _wait(lambda: _cli(tls, sentinel_port, "ping", password=None).stdout.strip() == "PONG", "the Sentinel over TLS")
        before = _served_serial(port, tls, client)
        assert _served_serial(sentinel_port, tls, client) == before

        renewed = ca.issue(tmp_path / "renewed", "redis-user-profile")
        for f in ("tls.crt", "tls.key"):
            shutil.copy(renewed / f, tls / f)
        _wait(lambda: _served_serial(port, tls, client) != before, "Redis to serve the renewed certificate", timeout=10)
        assert redis_proc.poll() is None, "Redis restarted instead of reloading"
        assert _cli(tls, port, "ping", cert=client).stdout.strip() == "PONG"
        assert sentinel_proc.wait(timeout=10) is not None   # ended for the kubelet to restart with the new files
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
