"""The real Envoy Gateway controller in KUBERNETES provider mode against a local control plane: where it puts the
proxies (namespace, pod labels, ports, the xDS address they are told to use), read back from the cluster.

The local data path (hybridml/local/dataplane) runs Envoy Gateway standalone (File provider, proxies as host
processes), so it never shows what the controller does in a cluster. Here the same binary (v1.9.1, built by
scripts/toolchain.sh) runs as it does in the fleet: Kubernetes provider, the program's EnvoyGateway configuration
(workloads/gateway.py ``envoy_gateway_values``: deploy type GatewayNamespace, rate limits on Redis), reconciling the
Gateways the program renders into proxy Deployments, Services, ConfigMaps and ServiceAccounts; the kube-controller-
manager makes their pods and kwok runs them. Opt-in: `start` is called by tests/e2e/test_proxy_placement.py (and
whoever wants it); it is not one of the components every local control plane runs (components.py), as it needs root
(the sandbox below) and only the gateway's placement is learnt from it.

What the controller expects of a pod, given here (all fixed paths or in-cluster settings in v1.9.1):

- its TLS files under ``/certs`` (xDS server, rate-limit xDS, webhook): ``envoy-gateway certgen`` (the chart's
  certgen Job) creates the Secrets ``envoy-gateway``, ``envoy``, ``envoy-rate-limit`` in the controller namespace,
  and ``/certs`` gets the ``envoy-gateway`` Secret's files, as the chart mounts it;
- an in-cluster API configuration (GatewayNamespace mode's xDS server builds a client with ``rest.InClusterConfig``
  to review the proxies' service-account tokens): ``/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}``
  (a TokenRequest token of the ServiceAccount ``envoy-gateway``, the cluster's CA) and
  ``KUBERNETES_SERVICE_HOST/PORT``. The whole controller uses that configuration (no KUBECONFIG), so it acts as
  that ServiceAccount, bound to ``cluster-admin`` here (the chart's narrower RBAC is Helm templates, not rendered
  here);
- the topology injector webhook is switched off (``provider.kubernetes.proxyTopologyInjector.disabled``), and so is
  leader election (one replica; a stale Lease of a killed run would delay a restart by its duration).

The process runs in a SANDBOX (netns_sandbox.py, as root): its own mount namespace, where a tmpfs root made of bind
mounts of the host's directories adds ``/certs`` and the service-account directory without touching the host's file
system, and its own network namespace, where its fixed listeners (xDS :18000, rate-limit xDS :18001, Wasm :18002,
health :8081, metrics :19001, admin :19000, all on every interface) clash with nothing, not even a standalone data path
on the same host. The API server is reached through a forwarder from 127.0.0.1:<apiserver port> inside to the same
port outside. The sandbox exits (stopping the controller) when the control plane's kube-apiserver is gone, so
`hybridml local down` ends it too.

The controller's own Deployment and Service come from its Helm chart in the fleet; here they are written with the
chart's names, labels and ports (kwok runs the Deployment's pod; the controller itself runs in the sandbox), so that
the address the proxies are told to use resolves to a pod in the controller's namespace as it does there, and the
rate-limit Deployment the controller makes has its owner (the controller's Deployment, looked up by name).

Not run here: the proxies themselves (kwok pods: no Envoy connects to the xDS server), the AI Gateway extension
server (its Go module is not served: ``extensionManager`` is left out of the configuration), the chart's image
defaults (images play no part in where pods run).
"""
from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.errors import ToolchainMissing
from workloads.images import Charts
from workloads.render import gateway as gw

from .crds import FIELD_MANAGER
from .errors import LocalClusterError, LocalClusterTimeout
from .kubeapi import KubeAPI
from .paths import ClusterPaths, load_state
from .processes import log_tail, running_pid, start_process, stop_process
from .toolchain import find_binary

COMPONENT = "envoy-gateway-k8s"
BINARY = "envoy-gateway"
CONTROLLER_NAMESPACE = Charts().envoy_gateway.namespace     # the Helm release's namespace: envoy-gateway-system
SERVICE = "envoy-gateway"                                    # config.EnvoyGatewayServiceName (v1.9.1)
SERVICE_ACCOUNT = "envoy-gateway"
DNS_DOMAIN = "cluster.local"
XDS_PORT = 18000
# the chart's Service ports (charts/gateway-helm values: deployment.ports) and its pod labels (eg.selectorLabels with
# the release name `envoy-gateway` the program installs it under, plus `control-plane`)
CHART_SERVICE_PORTS = (("grpc", 18000), ("ratelimit", 18001), ("wasm", 18002), ("metrics", 19001))
CHART_POD_LABELS = {"control-plane": "envoy-gateway", "app.kubernetes.io/name": "gateway-helm",
                    "app.kubernetes.io/instance": "envoy-gateway"}
CERTGEN_SECRET = "envoy-gateway"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CERTS_DIR = "/certs"
LEFT_OUT = ("extensionManager",)
"""Configuration the program gives the controller that cannot apply here: the AI Gateway extension server."""
READY_TIMEOUT = 90.0
STARTED = 'started\t{{"runner": "{runner}"}}'
"""The log line of a runner that has started (v1.9.1: provider, infrastructure, ...)."""
OWNING_NAME = "gateway.envoyproxy.io/owning-gateway-name"
OWNING_NAMESPACE = "gateway.envoyproxy.io/owning-gateway-namespace"


# --------------------------------------------------------------------------- configuration (pure)


def config(program: Mapping[str, Any], deploy_type: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The EnvoyGateway configuration run here, from the one the program gives the chart (``config.envoyGateway`` of
    `workloads.gateway.envoy_gateway_values`), and what of it was left out. ``deploy_type`` overrides the deploy type
    (a deliberately broken variant: ``ControllerNamespace``)."""
    cfg = copy.deepcopy(dict(program))
    left_out = [k for k in LEFT_OUT if cfg.pop(k, None) is not None]
    provider = cfg.setdefault("provider", {"type": "Kubernetes"})
    if provider.get("type") != "Kubernetes":
        raise LocalClusterError(f"the program's Envoy Gateway provider is {provider.get('type')!r}, not Kubernetes")
    kube = provider.setdefault("kubernetes", {})
    if deploy_type is not None:
        kube["deploy"] = {"type": deploy_type}
    kube["proxyTopologyInjector"] = {"disabled": True}
    kube["leaderElection"] = {"disable": True}
    return {"apiVersion": f"{gw.EG}/v1alpha1", "kind": "EnvoyGateway", **cfg}, left_out


def xds_address(deployment: Mapping[str, Any]) -> tuple[str, int]:
    """(host, port) of the xDS server in a proxy Deployment's bootstrap (the envoy container's ``--config-yaml``)."""
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        args = list(c.get("args") or [])
        for i, a in enumerate(args):
            text = args[i + 1] if a == "--config-yaml" and i + 1 < len(args) else (
                a.split("=", 1)[1] if a.startswith("--config-yaml=") else None)
            if text is None:
                continue
            boot = yaml.safe_load(text)
            for cl in (boot.get("static_resources") or {}).get("clusters") or []:
                if cl.get("name") == "xds_cluster":
                    ep = cl["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                    sa = ep["address"]["socket_address"]
                    return str(sa["address"]), int(sa["port_value"])
    name = deployment["metadata"].get("name")
    raise LocalClusterError(f"Deployment {name}: no xds_cluster in the envoy container's --config-yaml bootstrap")


# --------------------------------------------------------------------------- what the controller made


@dataclass
class Proxy:
    """The proxy infrastructure the controller made for one Gateway."""

    gateway: str                     # <namespace>/<name> of the Gateway
    namespace: str                   # where the Deployment, Service and pods are
    deployment: dict[str, Any]
    service: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.deployment["metadata"]["name"]

    @property
    def pod_labels(self) -> dict[str, str]:
        return dict(self.deployment["spec"]["template"]["metadata"].get("labels") or {})

    @property
    def container_ports(self) -> list[tuple[str, int, str]]:
        """(name, containerPort, protocol) of the envoy container."""
        (envoy,) = [c for c in self.deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "envoy"]
        return [(p.get("name", ""), int(p["containerPort"]), p.get("protocol", "TCP")) for p in envoy.get("ports") or []]

    @property
    def service_ports(self) -> list[tuple[str, int, int | str]]:
        """(name, port, targetPort) of its Service."""
        if self.service is None:
            return []
        return [(p.get("name", ""), int(p["port"]), p.get("targetPort", p["port"])) for p in self.service["spec"]["ports"]]

    @property
    def xds(self) -> tuple[str, int]:
        return xds_address(self.deployment)


def proxies(api: KubeAPI, gateways: list[tuple[str, str]], namespace: str | None = None) -> dict[tuple[str, str], Proxy]:
    """The proxy Deployment/Service/pods the controller made for each (namespace, name) Gateway, wherever it put
    them (found by its owning-gateway labels in every namespace, or only in ``namespace``); a Gateway with no (or
    more than one) Deployment is left out."""
    out: dict[tuple[str, str], Proxy] = {}
    for ns, name in gateways:
        sel = {"labelSelector": f"{OWNING_NAME}={name},{OWNING_NAMESPACE}={ns}"}
        deps = [d for d in api.get("/apis/apps/v1/deployments", params=sel)["items"]
                if namespace is None or d["metadata"]["namespace"] == namespace]
        if len(deps) != 1:
            continue
        dep = deps[0]
        where = dep["metadata"]["namespace"]
        svcs = api.get(f"/api/v1/namespaces/{where}/services", params=sel)["items"]
        match = ",".join(f"{k}={v}" for k, v in sorted(dep["spec"]["selector"]["matchLabels"].items()))
        pods = api.get(f"/api/v1/namespaces/{where}/pods", params={"labelSelector": match})["items"]
        out[(ns, name)] = Proxy(f"{ns}/{name}", where, dep, svcs[0] if svcs else None, pods)
    return out


def deployment_events(api: KubeAPI, namespace: str) -> list[str]:
    """Warnings in a namespace (ReplicaSets refused by Pod Security, ...), for a clear failure message."""
    items = api.get(f"/api/v1/namespaces/{namespace}/events", params={"fieldSelector": "type=Warning"})["items"]
    return [f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}: {e.get('reason')}: {e.get('message')}"
            for e in items]


# --------------------------------------------------------------------------- set-up on a control plane


def binary() -> Path:
    found = find_binary(BINARY)
    if found is None:
        raise ToolchainMissing(f"{BINARY} not found; build it with `scripts/toolchain.sh envoy-gateway`",
                               missing=[BINARY], searched=[])
    return found


def sandbox_supported() -> tuple[bool, str]:
    """The sandbox needs root (mount and network namespaces, bind mounts)."""
    if os.geteuid() != 0:
        return False, "the Envoy Gateway sandbox needs root (mount and network namespaces)"
    return True, ""


def home(paths: ClusterPaths) -> Path:
    return paths.root / COMPONENT


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


def _ensure(api: KubeAPI, path: str, obj: dict[str, Any]) -> None:
    api.apply(f"{path}/{obj['metadata']['name']}", obj, FIELD_MANAGER)


def _api_port(paths: ClusterPaths) -> int:
    port = (load_state(paths).get("ports") or {}).get("apiserver")
    if not port:
        raise LocalClusterError(f"no API server port recorded for {paths.name}")
    return int(port)


def prepare(api: KubeAPI, paths: ClusterPaths, eg_config: Mapping[str, Any]) -> None:
    """Everything the controller reads before it starts (idempotent): its namespace, ServiceAccount and binding, the
    chart's Service and Deployment, the certgen Secrets and /certs files, the service-account files, its configuration."""
    ns = CONTROLLER_NAMESPACE
    if api.get_or_none(f"/api/v1/namespaces/{ns}") is None:
        api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    _ensure(api, f"/api/v1/namespaces/{ns}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT, "namespace": ns}})
    _ensure(api, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{COMPONENT}-cluster-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": ns}]})
    _ensure(api, f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "namespace": ns, "labels": CHART_POD_LABELS},
        "spec": {"selector": CHART_POD_LABELS,
                 "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in CHART_SERVICE_PORTS]}})
    # the controller's own Deployment as the chart names and labels it (the rate-limit infrastructure is owned by it);
    # its pod is kwok's, the controller itself runs in the sandbox
    pod = stand_in_pod("", ns, CHART_POD_LABELS, [(n, p, "TCP") for n, p in CHART_SERVICE_PORTS])
    _ensure(api, f"/apis/apps/v1/namespaces/{ns}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": SERVICE, "namespace": ns, "labels": CHART_POD_LABELS},
        "spec": {"replicas": 1, "selector": {"matchLabels": CHART_POD_LABELS},
                 "template": {"metadata": {"labels": CHART_POD_LABELS}, "spec": pod["spec"]}}})
    # certgen, as the chart's Job runs it (Secrets in the controller namespace; no topology injector webhook to patch)
    env = {**os.environ, "KUBECONFIG": str(paths.kubeconfig), "ENVOY_GATEWAY_NAMESPACE": ns}
    proc = subprocess.run([str(binary()), "certgen", "--disable-topology-injector"], env=env, capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0:
        raise LocalClusterError(f"{BINARY} certgen failed: {(proc.stdout + proc.stderr)[-800:]}")
    secret = api.get(f"/api/v1/namespaces/{ns}/secrets/{CERTGEN_SECRET}")
    root = home(paths)
    for key in ("tls.crt", "tls.key", "ca.crt"):
        _write(root / "certs" / key, base64.b64decode(secret["data"][key]))
    token = api.post(f"/api/v1/namespaces/{ns}/serviceaccounts/{SERVICE_ACCOUNT}/token",
                     {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                      "spec": {"expirationSeconds": 86400}})["status"]["token"]
    _write(root / "serviceaccount" / "token", token.encode())
    _write(root / "serviceaccount" / "ca.crt", (paths.pki / "ca.crt").read_bytes(), 0o644)
    _write(root / "serviceaccount" / "namespace", ns.encode(), 0o644)
    _write(root / "envoy-gateway.yaml", yaml.safe_dump(dict(eg_config), sort_keys=False).encode(), 0o644)


def stand_in_pod(name: str, namespace: str, labels: Mapping[str, str], ports: list[tuple[str, int, str]],
                 ) -> dict[str, Any]:
    """A pod with given labels and container ports that kwok runs on any node (Pod Security `restricted`)."""
    port_list = [{"containerPort": p, "protocol": proto, **({"name": n} if n else {})} for n, p, proto in ports]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10", "ports": port_list,
                                     "securityContext": {"allowPrivilegeEscalation": False,
                                                         "capabilities": {"drop": ["ALL"]}}}]}}


SANDBOX = Path(__file__).with_name("netns_sandbox.py")


def argv(paths: ClusterPaths) -> list[str]:
    """The sandbox (run by path: standard library only) around ``envoy-gateway server``."""
    root = home(paths)
    return [sys.executable, str(SANDBOX), f"--root={root / 'root'}", f"--bind={CERTS_DIR}={root / 'certs'}",
            f"--bind={SA_DIR}={root / 'serviceaccount'}", f"--forward={_api_port(paths)}",
            f"--watch={paths.pidfile('kube-apiserver')}", "--",
            str(binary()), "server", f"--config-path={root / 'envoy-gateway.yaml'}"]


def process_env(paths: ClusterPaths) -> dict[str, str]:
    """As the chart's Deployment sets it (namespace, cluster domain) and the kubelet would (the API server's address);
    KUBECONFIG empty: controller-runtime then takes the in-cluster configuration, as in a pod."""
    return {"ENVOY_GATEWAY_NAMESPACE": CONTROLLER_NAMESPACE,
            "KUBERNETES_CLUSTER_DOMAIN": DNS_DOMAIN, "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(_api_port(paths)), "KUBECONFIG": ""}


def running(paths: ClusterPaths) -> bool:
    return running_pid(paths, COMPONENT) is not None


def start(api: KubeAPI, paths: ClusterPaths, eg_config: Mapping[str, Any], timeout: float = READY_TIMEOUT) -> None:
    """(Re)start the controller on one control plane with ``eg_config`` and wait until its runners have started (its
    log says so). A running one is stopped first (a configuration change needs a restart)."""
    ok, why = sandbox_supported()
    if not ok:
        raise LocalClusterError(why)
    stop(paths)
    prepare(api, paths, eg_config)
    log = paths.logfile(COMPONENT)
    mark = log.stat().st_size if log.exists() else 0
    start_process(paths, COMPONENT, argv(paths), process_env(paths))
    deadline = time.monotonic() + timeout
    while not all(STARTED.format(runner=r) in _log_since(paths, mark) for r in ("provider", "infrastructure")):
        if not running(paths):
            raise LocalClusterError(f"{COMPONENT} exited during start-up:\n{log_tail(paths, COMPONENT, 40)}")
        if time.monotonic() > deadline:
            raise LocalClusterTimeout(f"{COMPONENT} did not start its runners after {timeout:.0f}s:\n"
                                      f"{log_tail(paths, COMPONENT, 40)}")
        time.sleep(0.25)


def log_since(paths: ClusterPaths, offset: int = 0) -> str:
    """The controller's log from byte ``offset`` on (its errors: what it could not create, and why)."""
    return _log_since(paths, offset)


def _log_since(paths: ClusterPaths, offset: int) -> str:
    try:
        with open(paths.logfile(COMPONENT), "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def infra_errors(log: str) -> list[str]:
    """What the controller could not create (its infrastructure runner's errors), one line each, the API server's
    reason last: ``failed to create new infra: ... is invalid: ...`` (v1.9.1 log lines)."""
    out = []
    for line in log.splitlines():
        if "\terror\t" not in line or "failed to create new infra" not in line:
            continue
        message = line.split("\t")[-1]
        try:
            message = str(json.loads(message).get("error", message))
        except ValueError:
            pass
        head, _, reason = message.partition(" is invalid: ")
        out.append(f"{head.split(': failed to create/update')[0]}: {reason}" if reason else message[:600])
    return out


def stop(paths: ClusterPaths) -> bool:
    return stop_process(paths, COMPONENT)


def cpu_seconds(paths: ClusterPaths) -> float | None:
    """CPU time (user + system) the controller and its sandbox have used so far; None when not running."""
    pid = running_pid(paths, COMPONENT)
    if pid is None:
        return None
    ticks, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(stat[11]) + int(stat[12])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


__all__ = ["BINARY", "COMPONENT", "CONTROLLER_NAMESPACE", "Proxy", "SERVICE", "XDS_PORT", "binary", "config", "cpu_seconds",
           "deployment_events", "infra_errors", "log_since", "prepare", "proxies", "running", "sandbox_supported", "stand_in_pod", "start", "stop",
           "xds_address"]

