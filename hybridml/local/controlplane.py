"""Local Kubernetes control planes: etcd + kube-apiserver + kube-controller-manager +
kube-scheduler + kwok per cluster, as supervised background processes on 127.0.0.1, with a
stand-in for KEDA's HPAs (keda_sim.py: no KEDA operator runs here).

Nodes are kwok fake nodes (annotation ``kwok.x-k8s.io/node: fake``), so Deployments get pods
that the scheduler places by nodeSelector/affinity/tolerations/resources and that kwok marks
Running; no container ever runs.

This module is the orchestration: it brings clusters up in order (ports, PKI, kubeconfigs, etcd,
apiserver, the other components, CRDs, nodes, the OpenAPI schema), reports their status and stops
them. The parts are rooms of their own: paths.py (state layout), processes.py (pidfiles, start and
stop), components.py (argv, configuration, sizing), pki.py, crds.py, nodes.py (definitions, Node
objects, sync), kubeapi.py (the stdlib client).

``up`` is idempotent: running components are kept, dead ones restarted, CRDs re-applied only
when their file changed, nodes created/updated/removed to match the definition.
``down`` stops only the processes recorded in the pidfiles (checking their identity).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from infra.errors import InvalidValue

from .components import COMPONENT_SETUP, COMPONENTS, CRD_COMPONENTS, component_argv, component_env, write_component_files
from .crds import install_crds
from .errors import LocalClusterError, LocalClusterTimeout
from .kubeapi import KubeAPI
from .nodes import ClusterDef, coerce_cluster, release_node_leases, sync_nodes
from .paths import (
    DEFAULT_CRD_DIR,
    ClusterPaths,
    client_kubeconfig,
    cluster_dirs,
    load_state,
    resolve_state_dir,
    write_json,
    write_merged_kubeconfig,
    write_yaml,
)
from .pki import ensure_pki
from .processes import PORT_LOCK, free_ports, log_tail, port_free, running_pid, start_process, stop_process
from .toolchain import find_binaries, kwok_stage_files

MAX_PARALLEL_CLUSTERS = 8   # clusters brought up at once (sizing notes: components.py)
PORT_NAMES = frozenset({"etcd_client", "etcd_peer", "apiserver"})
OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


@dataclass
class ClusterStatus:
    name: str
    server: str | None
    kubeconfig: str
    components: dict[str, int | None]  # component -> pid (None: not running)

    @property
    def running(self) -> bool:
        return all(pid is not None for pid in self.components.values())

    @property
    def stopped(self) -> bool:
        return all(pid is None for pid in self.components.values())


def _api_for(paths: ClusterPaths, port: int) -> KubeAPI:
    return KubeAPI("127.0.0.1", port, paths.pki / "ca.crt", paths.pki / "admin.crt", paths.pki / "admin.key")


def _wait_etcd(port: int, timeout: float, alive: Any) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if json.loads(r.read()).get("health") == "true":
                    return
        except (OSError, ValueError):
            pass
        if not alive():
            raise LocalClusterError("etcd exited during startup")
        time.sleep(0.1)
    raise LocalClusterTimeout(f"etcd on port {port} not healthy after {timeout:.0f}s")


def _ports(paths: ClusterPaths, state_dir: Path, state: dict[str, Any]) -> dict[str, int]:
    """The cluster's ports: the recorded ones (kubeconfigs stay valid) unless a stranger took one.
    New ports stop whatever still runs on the old ones. Call with PORT_LOCK held."""
    ports: dict[str, int] = dict(state.get("ports") or {})
    running_any = any(running_pid(paths, comp) for comp in COMPONENTS)
    if set(ports) != PORT_NAMES or (not running_any and not all(port_free(p) for p in ports.values())):
        taken: set[int] = set()
        for other in cluster_dirs(state_dir):
            taken |= set((load_state(other).get("ports") or {}).values())
        ec, ep, api_port = free_ports(3, taken)
        ports = {"etcd_client": ec, "etcd_peer": ep, "apiserver": api_port}
        for comp in COMPONENTS:  # ports changed: nothing running may keep the old ones
            stop_process(paths, comp)
    return ports


def _tails(paths: ClusterPaths, components: Iterable[str]) -> str:
    return "\n".join(f"--- {comp} log tail ---\n{log_tail(paths, comp)}" for comp in components)


def up_cluster(
    cluster: ClusterDef | Any,
    state_dir: str | os.PathLike | None = None,
    crd_dir: str | os.PathLike | None = None,
    *,
    crd_patterns: Sequence[str] | None = None,
    timeout: float = 180.0,
    log: Any = None,
) -> ClusterStatus:
    """Bring one cluster up (idempotent). See :func:`up`."""
    c = coerce_cluster(cluster)
    sd = resolve_state_dir(state_dir)
    say = log or (lambda msg: None)
    bins = find_binaries()
    kwok_stage_files()  # fail early if the kwok stage configs are missing
    paths = ClusterPaths(sd / "clusters" / c.name)
    paths.root.mkdir(parents=True, exist_ok=True)
    state = load_state(paths)

    with PORT_LOCK:
        ports = _ports(paths, sd, state)
        state.update({"name": c.name, "ports": ports, "definition": asdict(c)})
        write_json(paths.state_file, state)

    ensure_pki(paths.pki, c.name)
    server = f"https://127.0.0.1:{ports['apiserver']}"
    write_yaml(paths.kubeconfig, client_kubeconfig(c.name, server, paths.pki, "admin"))
    write_component_files(paths, c.name, server)

    def ensure(component: str) -> bool:
        if running_pid(paths, component) is not None:
            return False
        say(f"[{c.name}] starting {component}")
        start_process(paths, component, component_argv(component, bins, paths, ports), component_env(component, paths))
        return True

    def alive(component: str):
        return lambda: running_pid(paths, component) is not None

    paths.etcd_data.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.etcd_data, 0o700)
    try:
        if ensure("etcd"):
            _wait_etcd(ports["etcd_client"], 60, alive("etcd"))
        api = _api_for(paths, ports["apiserver"])
        ensure("kube-apiserver")
        api.wait_healthy(timeout, alive=alive("kube-apiserver"))
        for comp in ("kube-controller-manager", "kube-scheduler"):
            ensure(comp)
        if running_pid(paths, "kwok") is None:
            release_node_leases(api)
        ensure("kwok")
        ensure("keda-sim")
    except (RuntimeError, TimeoutError) as e:   # LocalClusterError, KubeAPIError, or an OS-level timeout
        tails = _tails(paths, [comp for comp in COMPONENTS if paths.logfile(comp).exists()])
        raise LocalClusterError(f"cluster {c.name}: {e}\n{tails}") from e

    names: list[str] = []
    if crd_dir is not None and Path(crd_dir).is_dir():
        t0 = time.monotonic()
        names = install_crds(api, Path(crd_dir), paths.crd_cache, timeout=timeout, patterns=crd_patterns)
        say(f"[{c.name}] {len(names)} CRDs in place ({time.monotonic() - t0:.1f}s)")
    # operators that watch custom kinds start once those CRDs are served (KubeRay, KServe); without them
    # they are not run at all (and one left running from an earlier `up` with them is stopped)
    expected = [comp for comp in COMPONENTS if comp not in CRD_COMPONENTS or set(CRD_COMPONENTS[comp]) <= set(names)]
    for comp in CRD_COMPONENTS:
        if comp not in expected:
            stop_process(paths, comp)
        elif comp in COMPONENT_SETUP:
            try:
                COMPONENT_SETUP[comp](api, paths, functools.partial(ensure, comp), alive(comp))
            except (RuntimeError, TimeoutError) as e:
                raise LocalClusterError(f"cluster {c.name}: {e}\n{_tails(paths, [comp])}") from e
        else:
            ensure(comp)
    t0 = time.monotonic()
    counts = sync_nodes(api, c.nodes)
    say(f"[{c.name}] {counts['total']} kwok nodes in place ({counts['created']} created, {counts['updated']} "
        f"updated, {counts['deleted']} deleted; {time.monotonic() - t0:.1f}s)")
    t0 = time.monotonic()
    size = warm_openapi(api)
    say(f"[{c.name}] OpenAPI schema built ({size / 1e6:.1f} MB; {time.monotonic() - t0:.1f}s)")
    api.close()

    # components that die right after starting (bad flag, port clash) are reported now
    time.sleep(0.2)
    dead = [comp for comp in expected if running_pid(paths, comp) is None]
    if dead:
        raise LocalClusterError(f"cluster {c.name}: components exited: {', '.join(dead)}\n{_tails(paths, dead)}")
    return _status_of(paths)


def warm_openapi(api: KubeAPI, timeout: float = 600.0) -> int:
    """Have the API server build its OpenAPI v2 document now (returns its size in bytes).

    The server builds it lazily on the first request after a start or a CRD change: with the serving
    stack's CRDs that is megabytes of schema and tens of CPU-seconds. Every Pulumi Kubernetes provider
    fetches it when it starts (timeout 32 s), so a fleet rollout that starts seven site stacks on
    seven freshly started control planes at once timed out on it ("configured Kubernetes cluster is
    unreachable: unable to load schema information"); built here, while nothing else competes for the
    CPU, every later fetch is served from the server's cache in milliseconds."""
    api.close()
    previous, api.timeout = api.timeout, timeout
    try:
        status_code, body = api.request_raw("GET", "/openapi/v2", accept=OPENAPI_V2_PROTOBUF)
    finally:
        api.close()
        api.timeout = previous
    if status_code != 200:
        raise LocalClusterError(f"{api.server}/openapi/v2: HTTP {status_code}: {body[:200]!r}")
    return len(body)


def up(
    clusters: Iterable[Any],
    state_dir: str | os.PathLike | None = None,
    crd_dir: str | os.PathLike | None = DEFAULT_CRD_DIR,
    *,
    crd_patterns: Sequence[str] | None = None,
    timeout: float = 180.0,
    log: Any = None,
) -> dict[str, ClusterStatus]:
    """Start (or reconcile) one local control plane per cluster definition.

    ``clusters``: ClusterDef objects, mappings, or objects with ``name`` and ``nodes``; a node has
    ``name``, ``labels`` (dict), ``taints`` (``key=value:Effect`` strings or key/value/effect
    mappings) and ``capacity`` (cpu, memory, pods, ``nvidia.com/gpu``...).
    ``crd_dir``: directory of CRD manifests to install (None: none); ``crd_patterns``: only the
    files whose names match one of these globs (e.g. ``["kserve.*", "lws.*"]``; CRDs take most of
    a cold start). ``log``: callable receiving progress lines. Returns status per cluster; also
    writes ``<state_dir>/kubeconfig`` with one context per cluster.
    """
    defs = [coerce_cluster(c) for c in clusters]
    names = [d.name for d in defs]
    if len(set(names)) != len(names):
        raise InvalidValue(f"duplicate cluster names: {names}")
    # Clusters come up concurrently: each apiserver spends most of its start-up (CRDs above all)
    # on its own, so they overlap well even on two cores.
    with ThreadPoolExecutor(max_workers=max(1, min(len(defs), MAX_PARALLEL_CLUSTERS))) as pool:
        futures = {
            d.name: pool.submit(
                up_cluster, d, state_dir, crd_dir, crd_patterns=crd_patterns, timeout=timeout, log=log
            )
            for d in defs
        }
        result = {name: f.result() for name, f in futures.items()}
    write_merged_kubeconfig(state_dir)
    return result


def _status_of(paths: ClusterPaths) -> ClusterStatus:
    state = load_state(paths)
    port = (state.get("ports") or {}).get("apiserver")
    return ClusterStatus(
        name=paths.name,
        server=f"https://127.0.0.1:{port}" if port else None,
        kubeconfig=str(paths.kubeconfig),
        components={comp: running_pid(paths, comp) for comp in _expected(paths)},
    )


def _expected(paths: ClusterPaths) -> list[str]:
    """The components a cluster runs: all, but those that need CRDs only where `up` installed them (crds.json)."""
    try:
        installed = {n for entry in json.loads(paths.crd_cache.read_text()).values() for n in entry.get("names", [])}
    except (OSError, ValueError, AttributeError):
        installed = set()
    return [comp for comp in COMPONENTS if comp not in CRD_COMPONENTS or set(CRD_COMPONENTS[comp]) <= installed]


def status(state_dir: str | os.PathLike | None = None) -> dict[str, ClusterStatus]:
    """Which components of which clusters are running (from the pidfiles)."""
    return {p.name: _status_of(p) for p in cluster_dirs(resolve_state_dir(state_dir))}


def down(state_dir: str | os.PathLike | None = None, clusters: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Stop the processes that ``up`` started (only those recorded in pidfiles).

    Data (etcd, certificates, kubeconfigs) is kept, so a later ``up`` resumes the same clusters.
    Returns the stopped components per cluster.
    """
    wanted = set(clusters) if clusters is not None else None
    stopped: dict[str, list[str]] = {}
    for paths in cluster_dirs(resolve_state_dir(state_dir)):
        if wanted is not None and paths.name not in wanted:
            continue
        stopped[paths.name] = [comp for comp in reversed(COMPONENTS) if stop_process(paths, comp)]
    return stopped


def api_client(name: str, state_dir: str | os.PathLike | None = None) -> KubeAPI:
    """An admin client (stdlib) for a cluster brought up by :func:`up`."""
    paths = ClusterPaths(resolve_state_dir(state_dir) / "clusters" / name)
    port = (load_state(paths).get("ports") or {}).get("apiserver")
    if not port:
        raise KeyError(f"no local cluster {name!r} in {paths.root.parent}")
    return _api_for(paths, int(port))


__all__ = ["ClusterStatus", "api_client", "down", "status", "up", "up_cluster", "warm_openapi"]
