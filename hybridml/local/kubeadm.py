"""Make a local control plane joinable by `kubeadm join`: the real node of a datacenter's test hosts.

The local control planes are not made by kubeadm, so they lack what `kubeadm join` reads: the
`kubeadm-config` and `kubelet-config` ConfigMaps, the `cluster-info` ConfigMap in kube-public (signed per
bootstrap token by the controller-manager's bootstrapsigner, components.py), a bootstrap token, and the RBAC
rules that let its holder post a CSR which the csrapproving controller approves and the cluster CA signs.
kubeadm's own phases write them against the running API server, as `kubeadm init` would have:

    kubeadm init phase upload-config kubeadm | upload-config kubelet | bootstrap-token

with a ClusterConfiguration whose controlPlaneEndpoint is the API server's address, 127.0.0.1:<port>: the
address its serving certificate names. A test host reaches that same address through a relay into its
network namespace (tools/testhosts/relay.py), so cluster-info is right for the machine and the nodes alike.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from .components import POD_CIDR, SERVICE_CIDR
from .controlplane import api_client
from .errors import LocalClusterError
from .paths import ClusterPaths, load_state, resolve_state_dir
from .toolchain import find_binaries

#: The group kubeadm gives its default join tokens: the RBAC rules of `bootstrap-token` are bound to it.
TOKEN_GROUP = "system:bootstrappers:kubeadm:default-node-token"


@dataclass(frozen=True)
class JoinSettings:
    """What `kubeadm join` needs (the kubernetes_node role's join variables)."""

    endpoint: str       # host:port of the API server
    token: str          # a bootstrap token, <id>.<secret>
    ca_cert_hash: str   # sha256:<hex> of the cluster CA's public key (discovery pins it)


def ca_cert_hash(ca_cert: Path) -> str:
    """kubeadm's CA pin: sha256 of the DER SubjectPublicKeyInfo of the CA certificate."""
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(ca_cert)], capture_output=True,
                         check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, capture_output=True,
                         check=True).stdout
    return "sha256:" + hashlib.sha256(der).hexdigest()


def kubeadm_configuration(cluster: str, endpoint: str, version: str, token: str, token_ttl: str) -> list[dict]:
    """The InitConfiguration (the token), ClusterConfiguration and KubeletConfiguration kubeadm's phases upload."""
    return [
        {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "InitConfiguration",
         "bootstrapTokens": [{"token": token, "ttl": token_ttl, "groups": [TOKEN_GROUP],
                              "usages": ["authentication", "signing"],
                              "description": "hybridml: join the datacenter's test hosts"}]},
        {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration", "clusterName": cluster,
         "kubernetesVersion": version, "controlPlaneEndpoint": endpoint,
         "networking": {"serviceSubnet": SERVICE_CIDR, "podSubnet": POD_CIDR, "dnsDomain": "cluster.local"}},
        # the cluster-wide kubelet defaults; each node patches its own (kubernetes_node role)
        {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration"},
    ]


def _kubeadm(kubeadm: Path, *args: str) -> str:
    proc = subprocess.run([str(kubeadm), *args], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise LocalClusterError(f"kubeadm {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def make_joinable(cluster: str, state_dir: str | os.PathLike | None = None, *, token_ttl: str = "24h") -> JoinSettings:
    """Prepare the running local control plane `cluster` for `kubeadm join` and return a fresh token for it.
    Idempotent (re-running uploads the same configuration and adds a token; expired ones are cleaned up)."""
    paths = ClusterPaths(resolve_state_dir(state_dir) / "clusters" / cluster)
    port = (load_state(paths).get("ports") or {}).get("apiserver")
    if not port:
        raise LocalClusterError(f"no local control plane {cluster!r} in {paths.root.parent}: start it first")
    endpoint = f"127.0.0.1:{port}"
    try:
        argv = json.loads(paths.pidfile("kube-apiserver").read_text()).get("argv") or []
    except (OSError, ValueError):
        argv = []
    if "--enable-bootstrap-token-auth" not in argv:
        raise LocalClusterError(f"the API server of {cluster} runs without bootstrap-token authentication (started "
                                "before hybridml knew real nodes, or not running): restart it, `hybridml local down` "
                                "then `hybridml local up`")
    kubeadm = find_binaries(("kubeadm",))["kubeadm"]
    version = _kubeadm(kubeadm, "version", "-o", "short").strip()
    token = _kubeadm(kubeadm, "token", "generate").strip()
    api = api_client(cluster, state_dir)
    try:
        # cluster-info is only created when missing: one naming an older API server address must go
        info = api.get_or_none("/api/v1/namespaces/kube-public/configmaps/cluster-info")
        if info is not None:
            servers = [c["cluster"]["server"] for c in yaml.safe_load(info["data"]["kubeconfig"])["clusters"]]
            if servers != [f"https://{endpoint}"]:
                api.delete("/api/v1/namespaces/kube-public/configmaps/cluster-info")
    finally:
        api.close()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "kubeadm.yaml"
        config.write_text(yaml.safe_dump_all(kubeadm_configuration(cluster, endpoint, version, token, token_ttl)))
        config.chmod(0o600)
        common = ["--config", str(config), "--kubeconfig", str(paths.kubeconfig)]
        _kubeadm(kubeadm, "init", "phase", "upload-config", "kubeadm", *common)
        _kubeadm(kubeadm, "init", "phase", "upload-config", "kubelet", *common)
        _kubeadm(kubeadm, "init", "phase", "bootstrap-token", "--skip-token-print", *common)
    return JoinSettings(endpoint=endpoint, token=token, ca_cert_hash=ca_cert_hash(paths.pki / "ca.crt"))


__all__ = ["JoinSettings", "TOKEN_GROUP", "ca_cert_hash", "kubeadm_configuration", "make_joinable"]
