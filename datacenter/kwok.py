"""Register bootstrapped hosts as kwok nodes of a Kubernetes cluster.

Where no real kubelet runs (hybridml's simulated test hosts: all but one per datacenter), the
bootstrap installs and configures everything but skips `kubeadm join`. The hosts then join the local
on-prem cluster as kwok nodes (``kwok.x-k8s.io/node: fake``), with exactly the labels and taints the
inventory gives the real kubelet, so placement and scheduling see the same datacenter, racks and
privacy zones as in production.

A host whose kubelet is real (`kubernetes_node_simulated: false` on the host, e.g. the one real test
host per datacenter, tools/testhosts/realnode.py) registers its own Node by `kubeadm join`: callers
register only `simulated_hosts(...)` as kwok nodes.

`node_manifests` is pure; `register_kwok_nodes` applies them with kubectl (server-side apply, so it
is idempotent and safe to re-run) and needs nothing but a kubeconfig path.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from datacenter.inventory import Inventory, InventoryHost
from infra import labels as L
from infra.errors import HybridmlError
from infra.kube import kwok_node, machine_id, parse_quantity

FIELD_MANAGER = "hybridml-bootstrap"
DEFAULT_KUBELET_VERSION = "v1.33.4"
DEFAULT_MAX_PODS = 110   # the kubelet's default maxPods
BOOTSTRAPPED_BY = {"hybridml.io/bootstrapped-by": "ansible (kubeadm join simulated)"}


class KwokRegistrationError(HybridmlError):
    """kubectl is missing or the API server refused the nodes."""

    exit_code = 1


def allocatable(host: InventoryHost, default_max_pods: int = DEFAULT_MAX_PODS) -> dict[str, str]:
    """What the host's kubelet offers pods: its cores and memory minus the system reservation
    (`kubernetes_node_system_reserved`), in millicores and MiB, and its maxPods."""
    reserved = host.vars.get("kubernetes_node_system_reserved") or {}
    cpu_m = host.cores * 1000 - _millicores(reserved.get("cpu"))
    mem_mi = int(host.memory_gib * 1024) - _mebibytes(reserved.get("memory"))
    return {"cpu": f"{cpu_m}m", "memory": f"{mem_mi}Mi",
            "pods": str(host.vars.get("kubernetes_node_max_pods", default_max_pods))}


def _millicores(quantity: object) -> int:
    return int(parse_quantity(quantity) * 1000) if quantity not in (None, "") else 0


def _mebibytes(quantity: object) -> int:
    return int(parse_quantity(quantity) / 2 ** 20) if quantity not in (None, "") else 0


def is_simulated(inventory: Inventory, name: str) -> bool:
    """`kubernetes_node_simulated` as Ansible resolves it for the host: host var, else rack, else datacenter."""
    host = inventory.host(name)
    for scope in (host.vars, inventory.rack(host.rack).vars, inventory.vars):
        if "kubernetes_node_simulated" in scope:
            return str(scope["kubernetes_node_simulated"]).lower() in ("true", "yes", "1")
    return False


def simulated_hosts(inventory: Inventory, hosts: Iterable[str] | None = None) -> list[str]:
    """The hosts (default: all) without a real kubelet: those hybridml registers as kwok nodes."""
    names = list(hosts) if hosts is not None else inventory.host_names
    return [name for name in names if is_simulated(inventory, name)]


def node_manifests(inventory: Inventory, hosts: Iterable[str] | None = None) -> list[dict]:
    """Node objects for the given hosts (default: all), labelled and tainted like their kubelets would be.
    Callers pass `simulated_hosts(...)`: a host with a real kubelet registers its own Node."""
    names = list(hosts) if hosts is not None else inventory.host_names
    version = inventory.vars.get("kubernetes_node_version")
    kubelet_version = f"v{version}" if version else DEFAULT_KUBELET_VERSION
    out = []
    for name in names:
        host = inventory.host(name)
        labels = dict(host.labels)
        labels.update({L.HOSTNAME: name, L.OS: "linux", L.ARCH: "amd64", L.KWOK_TYPE: "kwok"})
        if host.role == "control-plane":
            labels[L.CONTROL_PLANE_ROLE] = ""
        machine = machine_id(inventory.datacenter, name)
        node = kwok_node(
            name, labels=labels, taints=host.taints,
            capacity={"cpu": str(host.cores), "memory": f"{int(host.memory_gib * 1024)}Mi",
                      "pods": str(DEFAULT_MAX_PODS)},
            allocatable=allocatable(host), annotations=BOOTSTRAPPED_BY,
            addresses=[{"type": "InternalIP", "address": host.node_ip}, {"type": "Hostname", "address": name}],
            node_info={"kubeletVersion": kubelet_version, "kubeProxyVersion": kubelet_version,
                       "operatingSystem": "linux", "architecture": "amd64", "kernelVersion": "simulated",
                       "machineID": machine, "systemUUID": machine, "bootID": machine,
                       "containerRuntimeVersion": "containerd://2.4.2",  # the test hosts' (scripts/toolchain/versions.env)
                       "osImage": "Debian GNU/Linux 12 (bookworm)"})
        node["metadata"]["labels"] = dict(sorted(node["metadata"]["labels"].items()))
        out.append(node)
    return out


def find_kubectl(kubectl: str | None = None) -> str:
    candidates = [kubectl] if kubectl else []
    if os.environ.get("HYBRIDML_TOOLCHAIN_BIN"):
        candidates.append(str(Path(os.environ["HYBRIDML_TOOLCHAIN_BIN"]) / "kubectl"))
    candidates.append(str(Path(os.environ.get("HYBRIDML_CACHE") or Path.home() / ".cache" / "hybridml")
                          / "bin" / "current" / "kubectl"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("kubectl")
    if found:
        return found
    raise KwokRegistrationError("kubectl not found (looked at --kubectl, $HYBRIDML_TOOLCHAIN_BIN, "
                                "~/.cache/hybridml/bin/current and PATH); build it with scripts/toolchain.sh kubernetes")


def register_kwok_nodes(kubeconfig: str | Path, inventory: Inventory, hosts: Iterable[str] | None = None, *,
                        kubectl: str | None = None, timeout: float = 60) -> list[str]:
    """Create (or update) one kwok Node per host in the cluster of `kubeconfig`; returns the node names."""
    manifests = node_manifests(inventory, hosts)
    if not manifests:
        return []
    binary = find_kubectl(kubectl)
    base = [binary, "--kubeconfig", str(kubeconfig)]
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
    # status of an existing Node is a subresource that apply ignores: create first, then apply the rest
    proc = subprocess.run(base + ["create", "-f", "-", "-o", "name"], input=doc, text=True, capture_output=True,
                          timeout=timeout)
    if proc.returncode != 0 and "AlreadyExists" not in proc.stderr:
        raise KwokRegistrationError(f"kubectl create of {len(manifests)} kwok node(s) failed: {proc.stderr.strip()}")
    stripped = json.dumps({"apiVersion": "v1", "kind": "List",
                           "items": [{k: v for k, v in m.items() if k != "status"} for m in manifests]})
    proc = subprocess.run(base + ["apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}",
                                  "-f", "-", "-o", "name"], input=stripped, text=True, capture_output=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise KwokRegistrationError(f"kubectl apply of {len(manifests)} kwok node(s) failed: {proc.stderr.strip()}")
    return [m["metadata"]["name"] for m in manifests]
