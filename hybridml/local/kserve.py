"""The real KServe controller manager on a local control plane: the Triton pipelines' InferenceServices reconciled
into Deployments and Services (kwok runs their pods), their webhooks defaulting and validating them for real.

The manager is KServe's own (``cmd/manager`` of the release pinned in scripts/toolchain/versions.env, built from its Go
module by scripts/toolchain.sh), run in **Standard** deployment mode (formerly RawDeployment): plain Deployments,
Services and autoscalers, no Knative Serving, Istio or Gateway API objects, none of which runs here (and the fleet's
edge is Envoy Gateway, not a KServe ingress). What an install of the release would set up beside it is set up here
from the files the toolchain ships next to the binary (``kserve-release/``):

- the ``kserve`` namespace and its ``inferenceservice-config`` ConfigMap: the release's defaults with the deploy mode
  Standard, no Ingress, no Istio VirtualService and no Gateway API HTTPRoute (INGRESS_OVERRIDES);
- the CRDs ../shared/crds lacks: TrainedModel (the manager watches it) and ClusterStorageContainer (its pod webhook
  lists them to find the storage initializer of a model's URI), and the release's default ClusterStorageContainer
  as its Helm chart (charts/kserve-resources, what a cluster of the fleet is given) patches it: the storage
  initializer's securityContext, without which its pods are refused in the program's `restricted` namespaces;
- images tagged with the release, as upstream's install manifests are (its kustomize sources say ``:latest``);
- a serving certificate for 127.0.0.1 from the cluster's CA (pki.py), where the manager's webhook server reads it
  (controller-runtime's default certificate directory under ``$TMPDIR``, which is per cluster here);
- the release's Mutating/ValidatingWebhookConfigurations with ``clientConfig.url`` on loopback (instead of a
  Service) and the cluster's CA as ``caBundle``, registered once the webhook server answers.

Not exercised: no Triton runs (kwok pods), so no model is loaded and no storage initializer downloads anything.
The webhook server listens on every interface of the machine (the manager's only flag is the port), on a port of
its own per control plane (recorded in ``kserve.json`` so that a restart keeps its registrations valid).
"""
from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from infra.errors import ToolchainMissing

from .crds import CRDS, FIELD_MANAGER, sanitize_crd, wait_crds_established
from .errors import LocalClusterError, LocalClusterTimeout
from .kubeapi import KubeAPI
from .paths import ClusterPaths, cluster_dirs, load_state, write_json
from .pki import ensure_serving_cert
from .processes import PORT_LOCK, free_ports, port_free
from .toolchain import find_binary

COMPONENT = "kserve-controller"
BINARY = "kserve-controller"
NAMESPACE = "kserve"
CONFIG_MAP = "inferenceservice-config"
DEPLOYMENT_MODE = "Standard"
# the kinds of ../shared/crds the manager watches: it runs where they are served (components.CRD_COMPONENTS)
SERVED_CRDS = ("inferenceservices.serving.kserve.io", "servingruntimes.serving.kserve.io",
               "clusterservingruntimes.serving.kserve.io", "inferencegraphs.serving.kserve.io")
RELEASE_DIR = "kserve-release"
RELEASE_FILES = ("inferenceservice.yaml", "manifests.yaml", "default.yaml", "values.yaml",
                 "serving.kserve.io_trainedmodels.yaml", "serving.kserve.io_clusterstoragecontainers.yaml")
RELEASE_CRDS = RELEASE_FILES[4:]
# No Knative, Istio or Gateway API here, and the fleet routes to the predictors itself (Envoy Gateway HTTPRoutes):
# KServe creates no Ingress, VirtualService or HTTPRoute of its own.
INGRESS_OVERRIDES = {"enableGatewayApi": False, "disableIngressCreation": True, "disableIstioVirtualHost": True}
WEBHOOK_CERT = "kserve-webhook"
READY_TIMEOUT = 120.0   # the manager reads its ConfigMap, discovers the API and starts its webhook server


# --- the release's files, and what is made of them (pure but for reading them) ----------------------
def release_dir() -> Path:
    """The release files the toolchain ships next to the binary; ToolchainMissing when not built."""
    binary = find_binary(BINARY)
    if binary is not None:
        d = binary.resolve().parent / RELEASE_DIR
        if all((d / f).is_file() for f in RELEASE_FILES):
            return d
    raise ToolchainMissing(f"{BINARY} and its {RELEASE_DIR}/ not found; build them with `scripts/toolchain.sh "
                           f"{COMPONENT}`", missing=[BINARY], searched=[])


def release_version(release: Path) -> str:
    """The release the toolchain built (``v0.17.0``), from its stamp next to the binary."""
    for line in (release.parent / ".complete").read_text().splitlines():
        if line.startswith("version="):
            return "v" + line.split("=", 1)[1].strip().lstrip("v")
    raise ToolchainMissing(f"{release.parent}/.complete names no version: rebuild with `scripts/toolchain.sh {COMPONENT}`")


def pin_images(text: str, version: str) -> str:
    """KServe's images at the release's tag: upstream's kustomize sources say ``kserve/<image>:latest`` (and
    ``default-storage-initilizer:replace`` for the storage container); its release manifests carry the tag."""
    text = text.replace("default-storage-initilizer:replace", "kserve/storage-initializer:latest")
    return re.sub(r"\b(kserve/[a-z0-9-]+):latest\b", rf"\1:{version}", text)


def config_map(upstream: dict[str, Any]) -> dict[str, Any]:
    """The release's ``inferenceservice-config`` with the local choices: deploy mode Standard, no ingress objects.
    Every other setting (storage initializer, agent, resources, ...) is the release's default."""
    data = {k: v for k, v in (upstream.get("data") or {}).items() if not k.startswith("_")}   # `_example`: docs only
    ingress = json.loads(data["ingress"]) | INGRESS_OVERRIDES
    data["ingress"] = json.dumps(ingress, indent=2, sort_keys=True)
    data["deploy"] = json.dumps({"defaultDeploymentMode": DEPLOYMENT_MODE})
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CONFIG_MAP, "namespace": NAMESPACE},
            "data": data}


def webhook_configurations(upstream: list[dict[str, Any]], port: int, ca_pem: bytes) -> list[dict[str, Any]]:
    """The release's webhook registrations, pointed at the manager on 127.0.0.1:``port`` by URL (no Service in
    front of it here) and trusting the cluster's CA."""
    bundle = base64.b64encode(ca_pem).decode()
    out = []
    for doc in upstream:
        if doc.get("kind") not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            continue
        hooks = []
        for hook in doc.get("webhooks") or []:
            path = hook["clientConfig"]["service"]["path"]
            hooks.append({**hook, "clientConfig": {"url": f"https://127.0.0.1:{port}{path}", "caBundle": bundle}})
        out.append({"apiVersion": doc["apiVersion"], "kind": doc["kind"],
                    "metadata": {"name": doc["metadata"]["name"]}, "webhooks": hooks})
    return out


def storage_container(upstream: dict[str, Any], chart_values: dict[str, Any]) -> dict[str, Any]:
    """The default ClusterStorageContainer as the release's Helm chart installs it (storagecontainer-patch.yaml):
    the storage initializer's resources and containerSecurityContext from the chart's values."""
    storage = chart_values["kserve"]["storage"]
    container = {**upstream["spec"]["container"], "resources": storage["resources"],
                 "securityContext": storage["containerSecurityContext"]}
    return {**upstream, "spec": {**upstream["spec"], "container": container}}


def _load(path: Path, version: str | None = None) -> list[dict[str, Any]]:
    text = path.read_text()
    return [d for d in yaml.safe_load_all(pin_images(text, version) if version else text) if isinstance(d, dict)]


# --- per cluster -----------------------------------------------------------------------------------
def _state_file(paths: ClusterPaths) -> Path:
    return paths.root / "kserve.json"


def home(paths: ClusterPaths) -> Path:
    """The manager's $TMPDIR: controller-runtime reads its webhook certificate from <tmp>/k8s-webhook-server/."""
    return paths.root / "kserve"


def recorded_port(paths: ClusterPaths) -> int | None:
    try:
        return int(json.loads(_state_file(paths).read_text())["webhook_port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def webhook_port(paths: ClusterPaths, running: bool) -> int:
    """The manager's webhook port: the recorded one (its registrations stay valid) unless a stranger holds it while
    the manager is down; a new one is free and used by no other cluster of the state dir."""
    with PORT_LOCK:
        port = recorded_port(paths)
        if port is not None and (running or port_free(port)):
            return port
        taken: set[int] = set()
        for other in cluster_dirs(paths.root.parent.parent):
            taken |= set((load_state(other).get("ports") or {}).values())
            if (p := recorded_port(other)) is not None:
                taken.add(p)
        (port,) = free_ports(1, taken)
        write_json(_state_file(paths), {"webhook_port": port})
        return port


def process_env(paths: ClusterPaths) -> dict[str, str]:
    return {"TMPDIR": str(home(paths)), "POD_NAMESPACE": NAMESPACE}


def argv(binary: Path, paths: ClusterPaths) -> list[str]:
    """No leader election, no metrics or probe listener (several control planes share the machine)."""
    port = recorded_port(paths)
    if port is None:
        raise LocalClusterError(f"no webhook port recorded for {COMPONENT} (set up first)")
    return [str(binary), f"--kubeconfig={paths.component_kubeconfig(COMPONENT)}", f"--webhook-port={port}",
            "--metrics-addr=0", "--health-probe-addr=0", "--leader-elect=false", "--zap-encoder=console"]


def _prepare(api: KubeAPI, paths: ClusterPaths, release: Path) -> None:
    """Namespace, ConfigMap, the missing CRDs, the default storage container and the webhook's serving certificate
    (all idempotent)."""
    version = release_version(release)
    if api.get_or_none(f"/api/v1/namespaces/{NAMESPACE}") is None:
        api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    (upstream,) = [d for d in _load(release / "inferenceservice.yaml", version) if d.get("kind") == "ConfigMap"]
    api.apply(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{CONFIG_MAP}", config_map(upstream), FIELD_MANAGER)
    crds = [sanitize_crd(d) for f in RELEASE_CRDS for d in _load(release / f)]
    for crd in crds:
        api.apply(f"{CRDS}/{crd['metadata']['name']}", crd, FIELD_MANAGER)
    wait_crds_established(api, crds, timeout=60)
    (values,) = _load(release / "values.yaml")
    for sc in _load(release / "default.yaml", version):
        api.apply(f"/apis/serving.kserve.io/v1alpha1/clusterstoragecontainers/{sc['metadata']['name']}",
                  storage_container(sc, values), FIELD_MANAGER)
    crt, key = ensure_serving_cert(paths.pki, WEBHOOK_CERT, "kserve-webhook-server", "IP:127.0.0.1,DNS:localhost")
    certs = home(paths) / "k8s-webhook-server" / "serving-certs"
    certs.mkdir(parents=True, exist_ok=True)
    for src, name in ((crt, "tls.crt"), (key, "tls.key")):
        dest, data = certs / name, src.read_bytes()
        if not dest.exists() or dest.read_bytes() != data:   # the manager watches these: never half a file
            tmp = dest.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.chmod(0o600)
            tmp.replace(dest)


def webhook_serving(port: int, ca_file: Path) -> bool:
    """The webhook server completes a TLS handshake with the certificate the API server is told to trust."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock, \
                ctx.wrap_socket(sock, server_hostname="127.0.0.1"):
            return True
    except OSError:
        return False


def register_webhooks(api: KubeAPI, paths: ClusterPaths, release: Path, port: int) -> list[str]:
    names = []
    for obj in webhook_configurations(_load(release / "manifests.yaml"), port, (paths.pki / "ca.crt").read_bytes()):
        plural = obj["kind"].lower() + "s"
        api.apply(f"/apis/admissionregistration.k8s.io/v1/{plural}/{obj['metadata']['name']}", obj, FIELD_MANAGER)
        names.append(f"{obj['kind']}/{obj['metadata']['name']}")
    return names


def setup(api: KubeAPI, paths: ClusterPaths, start: Callable[[], bool], running: Callable[[], bool],
          timeout: float = READY_TIMEOUT) -> None:
    """Bring the manager up on one control plane (idempotent): what it reads first, then the process (``start``:
    the supervisor's, True when it started one), then, once its webhook server answers, the webhook registrations."""
    release = release_dir()
    port = webhook_port(paths, running())
    _prepare(api, paths, release)
    start()
    deadline = time.monotonic() + timeout
    while not webhook_serving(port, paths.pki / "ca.crt"):
        if not running():
            raise LocalClusterError(f"{COMPONENT} exited during start-up")
        if time.monotonic() > deadline:
            raise LocalClusterTimeout(f"{COMPONENT}'s webhook server not serving on "
                                      f"127.0.0.1:{port} after {timeout:.0f}s")
        time.sleep(0.25)
    register_webhooks(api, paths, release, port)


__all__ = ["COMPONENT", "CONFIG_MAP", "DEPLOYMENT_MODE", "INGRESS_OVERRIDES", "NAMESPACE", "SERVED_CRDS", "argv",
           "config_map", "pin_images", "process_env", "recorded_port", "register_webhooks", "release_dir",
           "release_version", "setup", "storage_container", "webhook_configurations", "webhook_port", "webhook_serving"]
