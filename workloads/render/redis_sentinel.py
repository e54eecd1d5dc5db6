"""Redis with Sentinel for a feature view's online store: the configuration files and the start scripts. Pure text.

Layout per view and site (objects in `workloads.render.feature_store`): a StatefulSet of two data pods (primary and
replica, AOF persistence), each with a Sentinel sidecar, and a one-pod Sentinel *arbiter*, so three Sentinels
(quorum 2) elect a new primary when the node of the primary goes. Why Sentinel and not Redis Cluster: one view's
online data fits one Redis (`online_memory_gib` is at most tens of GiB), Feast's Redis store speaks Sentinel
(`redis_type: redis_sentinel`), and a Cluster needs at least three primaries with a replica each, three times the
memory of a primary/replica pair, only to shard data that does not need sharding.

TLS only (`tls_args`): Redis and the Sentinels have no plaintext port; they serve TLS with the view's certificate
from the fleet issuer (workloads/render/certificates.py), speak TLS to their primary and to each other, and ask every
client for a certificate of the same CA (mutual TLS) on top of the password. The options are on the command line of
the start scripts, where the pod spec shows them (rule `data-path-tls`), not in the Secret's files. A Sentinel's
`default` user may only discover the primary (sentinel_conf); reconfiguring needs the `admin` user's password.

Every start asks the Sentinels for the current primary first, so a pod that comes back after a failover
rejoins as a replica instead of forking a second primary; only on a cold start (no Sentinel answers) does
ordinal 0 start as primary. Each Sentinel keeps a fixed id (sha1 of its announced name): a restarted Sentinel
is not counted twice. The real-Redis test (tests/workloads/test_feast_real.py) runs these very files.
"""
from __future__ import annotations

import hashlib

from infra.spec import FeatureView
from workloads.render.data import REDIS_PORT, SENTINEL_PORT, redis_name

QUORUM = 2
DOWN_AFTER_MS = 5000
"""A primary unanswered this long is subjectively down; with QUORUM Sentinels agreeing, failover starts."""
FAILOVER_TIMEOUT_MS = 30000
AUTH_MOUNT = "/etc/redis/auth"
TLS_MOUNT = "/etc/redis/tls"
"""The view's Certificate Secret (tls.crt, tls.key, ca.crt) in every Redis, Sentinel, exporter and client container."""
WORK_DIR = "/tmp"
"""Writable copies of the configurations (Redis and Sentinel rewrite them on failover): an emptyDir, not the PVC."""


def master_name(view: FeatureView) -> str:
    """The name Sentinel monitors the view's primary under (Feast's `sentinel_master`)."""
    return redis_name(view.name)


def config_command(password: str) -> str:
    """CONFIG renamed to a name only holders of the password can derive: Sentinel needs CONFIG REWRITE on failover,
    clients must not have CONFIG."""
    return "CONFIG-" + hashlib.sha256(f"hybridml/redis-config/{password}".encode()).hexdigest()[:24]


def tls_args(port: int, mount: str = TLS_MOUNT, *, sentinel: bool | None = None) -> list[str]:
    """redis-server options for TLS only: plaintext port 0, TLS on `port` with the view's certificate, TLS to the
    primary and between Sentinels (`tls-replication`); Redis asks every client for a certificate of the fleet CA,
    a Sentinel (`sentinel`, default: `port` is SENTINEL_PORT) asks none (sentinel_conf says why)."""
    return ["--port", "0", "--tls-port", str(port), "--tls-cert-file", f"{mount}/tls.crt", "--tls-key-file",
            f"{mount}/tls.key", "--tls-ca-cert-file", f"{mount}/ca.crt", "--tls-auth-clients",
            "no" if (port == SENTINEL_PORT if sentinel is None else sentinel) else "yes", "--tls-replication", "yes"]


def cli_tls(mount: str = TLS_MOUNT) -> str:
    """redis-cli options of a client holding the view's certificate."""
    return f"--tls --cert {mount}/tls.crt --key {mount}/tls.key --cacert {mount}/ca.crt"


CERT_CHECK_SECONDS = 60
"""How often a Redis or Sentinel container compares its certificate files: cert-manager renews the view's Certificate in
place at two thirds of its life and the kubelet refreshes the mounted Secret within about a minute."""


def cert_watch(on_change: str, mount: str = TLS_MOUNT, every: float = CERT_CHECK_SECONDS) -> str:
    """Shell: a background loop that runs `on_change` whenever the mounted certificate, key or CA changes (the start
    scripts run it before `exec`, so it lives beside the server for the container's life)."""
    return ("( certsum() { cat " + " ".join(f"{mount}/{f}" for f in ("tls.crt", "tls.key", "ca.crt"))
            + ' 2>/dev/null | sha256sum; }\n  last="$(certsum)"\n'
            f'  while sleep {every}; do now="$(certsum)"; if [ "$now" != "$last" ] && {on_change}; then last="$now"; fi; done\n'
            ") &\n")


def redis_cert_reload(port: int = REDIS_PORT, mount: str = TLS_MOUNT, auth: str = AUTH_MOUNT) -> str:
    """Shell: make a running Redis load renewed TLS files. CONFIG SET of the TLS files rebuilds Redis's TLS context
    without a restart (open connections keep theirs); CONFIG is renamed (config_command), so the name is derived from
    the password file here as the renderer derives it."""
    pw = f'"$(cat {auth}/password)"'
    cmd = f'"CONFIG-$(printf "hybridml/redis-config/%s" {pw} | sha256sum | cut -c1-24)"'
    return (f"redis-cli {cli_tls(mount)} -h 127.0.0.1 -p {port} --no-auth-warning -a {pw} {cmd} SET "
            f"tls-cert-file {mount}/tls.crt tls-key-file {mount}/tls.key tls-ca-cert-file {mount}/ca.crt | grep -qx OK")


def sentinel_cert_restart(jitter_of: str = "$self", spread_s: int = 120) -> str:
    """Shell: end this Sentinel so the kubelet restarts it with the renewed files. Sentinel has no runtime TLS reload
    (Redis 7: neither CONFIG SET nor SENTINEL CONFIG SET takes the TLS files), and a Sentinel restart costs nothing but
    its connections; the three Sentinels share the view's certificate, so each waits a delay derived from its name
    (0..spread_s s) to keep a quorum up while they take turns."""
    return (f'sleep $(( $(printf %d "0x$(printf %s "{jitter_of}" | sha1sum | cut -c1-4)") % {spread_s} )) '
            '&& kill -TERM $$')


def redis_conf(view: FeatureView, password: str) -> str:
    mem_mb = int(view.online_memory_gib * 1024)
    return "\n".join([
        # the ports are on the command line with the TLS options (tls_args: plaintext port 0, TLS on REDIS_PORT)
        "bind 0.0.0.0", "protected-mode yes", "dir /data",
        f"requirepass {password}", f"masterauth {password}",
        f"maxmemory {mem_mb}mb", "maxmemory-policy volatile-ttl",
        "appendonly yes", "appendfsync everysec", "save 900 1 300 100",
        "replica-read-only yes", "replica-serve-stale-data yes", "repl-diskless-sync yes",
        'rename-command FLUSHALL ""', f"rename-command CONFIG {config_command(password)}", ""])


SENTINEL_ADMIN = "admin"
DISCOVERY_COMMANDS = ("ping", "hello", "client|setname", "sentinel|get-master-addr-by-name", "sentinel|masters",
                      "sentinel|master", "sentinel|slaves", "sentinel|replicas", "sentinel|sentinels")
"""What a Sentinel's `default` user may do without a password: find the primary and its replicas, nothing else."""


def sentinel_conf(password: str) -> str:
    """What every Sentinel of every view shares; the start script appends its id, address and the monitor lines.

    ACL users: `default` may only discover (no password: Feast's Redis client can send a Sentinel one connection
    option, and that one is `ssl`), `admin` (the view's password) may do everything and is what the Sentinels use
    among themselves. Sentinels serve TLS but ask no client certificate (Feast's Sentinel connections carry none);
    Redis itself asks one of every client (tls_args)."""
    return "\n".join([
        f"dir {WORK_DIR}",
        "user default on nopass resetchannels -@all " + " ".join(f"+{c}" for c in DISCOVERY_COMMANDS),
        f"user {SENTINEL_ADMIN} on >{password} ~* &* +@all",
        f"sentinel sentinel-user {SENTINEL_ADMIN}", f"sentinel sentinel-pass {password}",
        "sentinel resolve-hostnames yes", "sentinel announce-hostnames yes", "sentinel deny-scripts-reconfig yes", ""])


def sentinel_master_conf(view: FeatureView, password: str, down_after_ms: int = DOWN_AFTER_MS,
                         failover_timeout_ms: int = FAILOVER_TIMEOUT_MS) -> str:
    """The options of the monitored primary (they must follow its `sentinel monitor` line)."""
    m = master_name(view)
    return "\n".join([
        f"sentinel auth-pass {m} {password}", f"sentinel down-after-milliseconds {m} {down_after_ms}",
        f"sentinel failover-timeout {m} {failover_timeout_ms}", f"sentinel parallel-syncs {m} 1",
        f"sentinel rename-command {m} CONFIG {config_command(password)}", ""])


def sentinel_monitor(view: FeatureView, host: str, port: int = REDIS_PORT) -> str:
    return f"sentinel monitor {master_name(view)} {host} {port} {QUORUM}\n"


def sentinel_myid(announced: str) -> str:
    """The fixed Sentinel id of an announced address (what the start script computes with sha1sum)."""
    return hashlib.sha1(announced.encode()).hexdigest()  # noqa: S324 - an identifier, not a security digest


def _discover(sentinels: list[str]) -> str:
    """Shell: set $master to the primary the first answering Sentinel names (empty when none answers)."""
    hosts = " ".join(sentinels)
    return ('master=""\n'
            f"for s in {hosts}; do\n"
            f'  [ "$s" = "$self" ] && continue\n'
            f'  m="$(timeout 3 redis-cli {cli_tls()} -h "$s" -p {SENTINEL_PORT} '
            f'sentinel get-master-addr-by-name {{master}} 2>/dev/null | head -n 1)" || m=""\n'
            f'  if [ -n "$m" ]; then master="$m"; break; fi\n'
            "done\n")


def redis_start(view: FeatureView, pods: list[str], sentinels: list[str], first: str) -> str:
    """Start script of a data pod. `pods`: the data pods' DNS names by ordinal; `sentinels`: every Sentinel's name;
    `first`: ordinal 0's name (the primary of a cold start)."""
    m = master_name(view)
    tls = " ".join(tls_args(REDIS_PORT))
    return ("set -eu\n"
            f'self="$HOSTNAME.{pods[0].split(".", 1)[1]}"\n'
            + _discover(sentinels).replace("{master}", m)
            + f'[ -z "$master" ] && [ "${{HOSTNAME##*-}}" != "0" ] && master="{first}"\n'
            f"cp {AUTH_MOUNT}/redis.conf {WORK_DIR}/redis.conf\n"
            + cert_watch(redis_cert_reload())
            + f'if [ -z "$master" ] || [ "$master" = "$self" ]; then\n'
            f'  exec redis-server {WORK_DIR}/redis.conf {tls} --replica-announce-ip "$self"\n'
            "fi\n"
            f'exec redis-server {WORK_DIR}/redis.conf {tls} --replica-announce-ip "$self" --replicaof "$master" {REDIS_PORT}\n')


def sentinel_start(view: FeatureView, self_name: str, sentinels: list[str], first: str) -> str:
    """Start script of a Sentinel. `self_name`: its announced DNS name (shell, may use $HOSTNAME)."""
    m = master_name(view)
    return ("set -eu\n"
            f'self="{self_name}"\n'
            + _discover(sentinels).replace("{master}", m)
            + f'[ -z "$master" ] && master="{first}"\n'
            f"conf={WORK_DIR}/sentinel.conf\n"
            f"cp {AUTH_MOUNT}/sentinel.conf $conf\n"
            'printf "sentinel myid %s\\nsentinel announce-ip %s\\n" "$(printf %s "$self" | sha1sum | cut -c1-40)" "$self" >> $conf\n'
            f'printf "sentinel monitor {m} %s {REDIS_PORT} {QUORUM}\\n" "$master" >> $conf\n'
            f"cat {AUTH_MOUNT}/sentinel-master.conf >> $conf\n"
            + cert_watch(sentinel_cert_restart())
            + f"exec redis-server $conf --sentinel {' '.join(tls_args(SENTINEL_PORT))}\n")
