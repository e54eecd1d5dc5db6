"""Where the local control planes keep their state, and the files written there.

One module owns the layout so that the supervisor (processes.py), the CRD installer (crds.py) and
the orchestrator (controlplane.py) agree on it. ``state_dir`` defaults to ``<repo>/.local`` (the
`local` environment); any other environment gets ``.local/envs/<env>`` (`state_dir_for`)::

    <state_dir>/kubeconfig                      merged kubeconfig, one context per cluster
    <state_dir>/clusters/<name>/cluster.json    ports and definition of the cluster
    <state_dir>/clusters/<name>/kubeconfig      admin kubeconfig (context <name>)
    <state_dir>/clusters/<name>/kubeconfigs/    one kubeconfig per component identity
    <state_dir>/clusters/<name>/kwok.yaml, scheduler.yaml   component configurations (components.py)
    <state_dir>/clusters/<name>/crds.json       source hash and CRD names per applied file (crds.py)
    <state_dir>/clusters/<name>/pki/            CA, certificates, service-account keys (pki.py)
    <state_dir>/clusters/<name>/etcd/           etcd data
    <state_dir>/clusters/<name>/logs/<component>.log
    <state_dir>/clusters/<name>/run/<component>.pid

Files are replaced atomically (written next to their place, then renamed), so a reader never sees
half a file; kubeconfigs are private (0600) as they hold client keys.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = Path(os.environ.get("HYBRIDML_LOCAL_STATE_DIR") or REPO_ROOT / ".local")
DEFAULT_CRD_DIR = Path(os.environ.get("HYBRIDML_CRD_DIR") or REPO_ROOT.parent / "shared" / "crds")


def state_dir_for(environment: str) -> Path:
    """Where an environment's local control planes live: `.local` for the embedded `local` stack,
    `.local/envs/<env>` for any other (e.g. the `sim` fleet), so their clusters never collide
    (both may have a site called aws-use1). The merged kubeconfig is `<state dir>/kubeconfig`."""
    return DEFAULT_STATE_DIR if environment == "local" else DEFAULT_STATE_DIR / "envs" / environment


def resolve_state_dir(state_dir: str | os.PathLike | None) -> Path:
    """``state_dir`` made absolute, or the default state dir when None."""
    return Path(state_dir).resolve() if state_dir is not None else DEFAULT_STATE_DIR


@dataclass
class ClusterPaths:
    """The files of one cluster, under ``<state_dir>/clusters/<name>``."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def crd_cache(self) -> Path:
        return self.root / "crds.json"

    @property
    def kwok_config(self) -> Path:
        return self.root / "kwok.yaml"

    @property
    def scheduler_config(self) -> Path:
        return self.root / "scheduler.yaml"

    def component_kubeconfig(self, component: str) -> Path:
        return self.root / "kubeconfigs" / f"{component}.kubeconfig"

    def pidfile(self, component: str) -> Path:
        return self.run / f"{component}.pid"

    def logfile(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def cluster_dirs(state_dir: Path) -> list[ClusterPaths]:
    """Every cluster of a state dir, by name."""
    base = state_dir / "clusters"
    if not base.is_dir():
        return []
    return [ClusterPaths(p) for p in sorted(base.iterdir()) if p.is_dir()]


def load_state(paths: ClusterPaths) -> dict[str, Any]:
    """A cluster's cluster.json (ports, definition); empty when absent or unreadable."""
    try:
        return json.loads(paths.state_file.read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def write_yaml(path: Path, data: Any, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.chmod(tmp, mode)
    tmp.replace(path)


# --- kubeconfigs ---------------------------------------------------------------------------------
def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def client_kubeconfig(name: str, server: str, pki: Path, user: str) -> dict[str, Any]:
    """A kubeconfig (context ``name``) authenticating as ``user`` with its client certificate in ``pki``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": _b64(pki / "ca.crt")}}],
        "users": [
            {
                "name": f"{name}-{user}",
                "user": {
                    "client-certificate-data": _b64(pki / f"{user}.crt"),
                    "client-key-data": _b64(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-{user}"}}],
        "current-context": name,
        "preferences": {},
    }


def write_merged_kubeconfig(state_dir: str | os.PathLike | None = None) -> Path:
    """Merge the admin kubeconfigs of all clusters in ``state_dir`` (one context per cluster)."""
    sd = resolve_state_dir(state_dir)
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}
    for paths in cluster_dirs(sd):
        if not paths.kubeconfig.exists():
            continue
        kc = yaml.safe_load(paths.kubeconfig.read_text())
        for key in ("clusters", "users", "contexts"):
            merged[key] += kc.get(key, [])
    merged["current-context"] = merged["contexts"][0]["name"] if merged["contexts"] else ""
    out = sd / "kubeconfig"
    write_yaml(out, merged)
    return out


__all__ = ["DEFAULT_CRD_DIR", "DEFAULT_STATE_DIR", "REPO_ROOT", "ClusterPaths", "client_kubeconfig", "cluster_dirs",
           "load_state", "resolve_state_dir", "state_dir_for", "write_json", "write_merged_kubeconfig", "write_yaml"]
