"""One version per operator: every controller whose custom resources the program writes, pinned once.

Each row says which release serves the program's kinds (its API groups), where that release's CRDs are kept
for validation (files of ../shared/crds and the upstream commit they were taken from, as its README lists
them), and who installs it: the program itself on the cloud clusters it creates (`installed_by_program`),
or the platform team beforehand (a prerequisite that the README lists, known by the upstream commit of
its CRDs: the cluster's release must serve at least those kinds and versions). The Helm charts the program
installs read their versions from here; `tests/workloads/test_versions.py` proves every apiVersion/kind
the program writes is served by the CRDs of the pinned release. Pure data.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorRelease:
    name: str
    version: str | None              # None: a prerequisite known by its CRDs' commit, not by a release we verified
    groups: tuple[str, ...]          # API groups of the kinds this release serves to the program
    crd_files: tuple[str, ...]       # file-name prefixes in shared/crds holding the release's CRDs
    crd_commit: str | None           # upstream commit of those files (shared/crds/README.md), when one release
    installed_by_program: bool
    chart: str | None = None         # Helm chart (repository/name) when the program installs it
    namespace: str | None = None
    note: str = ""


OPERATORS: dict[str, OperatorRelease] = {o.name: o for o in (
    OperatorRelease(
        "envoy-gateway", "v1.9.1", ("gateway.envoyproxy.io", "gateway.networking.k8s.io"),
        ("envoy-gateway.", "gateway-api."), None, True, "oci://docker.io/envoyproxy/gateway-helm", "envoy-gateway-system",
        note="the newest release; shared/crds holds a later main commit (d32f282) whose only differences from v1.9.1 "
             "are fields the program does not write (ClientTrafficPolicy maxRequestHeaderLimit, EnvoyProxy lua)"),
    OperatorRelease(
        "ai-gateway-crds", "v1.1.0", ("aigateway.envoyproxy.io",), ("envoy-ai-gateway.",),
        "c217da8a539570ba3f6014a60c2687c29a945f1f", True, "oci://docker.io/envoyproxy/ai-gateway-crds-helm",
        "envoy-ai-gateway-system", note="v1.1.0 is commit c217da8: v1beta1 routes, backends, security policies; QuotaPolicy"),
    OperatorRelease(
        "ai-gateway", "v1.1.0", (), (), None, True, "oci://docker.io/envoyproxy/ai-gateway-helm", "envoy-ai-gateway-system",
        note="the controller of the CRDs above; the same release"),
    OperatorRelease(
        "karpenter", "1.8.1", ("karpenter.sh", "karpenter.k8s.aws"), ("karpenter.",),
        "1d927085dd81a9df9301e613f371dac5b4d16bfe", True, "oci://public.ecr.aws/karpenter/karpenter", "kube-system"),
    OperatorRelease(
        "gpu-operator", "v25.3.4", (), (), None, True, "https://helm.ngc.nvidia.com/nvidia/gpu-operator", "gpu-operator",
        note="writes no custom resources of the program's; installs the device plugin and DCGM exporter"),
    OperatorRelease(
        "kuberay-operator", "1.5.0", ("ray.io",), ("kuberay.",), None, True,
        "https://ray-project.github.io/kuberay-helm/kuberay-operator", "kuberay-system",
        note="RayJobs and RayClusters of batch pipelines; the same release is built from its Go module for the local "
             "control planes (scripts/toolchain/versions.env KUBERAY_VERSION). shared/crds/more holds a later master "
             "commit (feeaf72) whose CRDs add fields to v1.5.0's (authOptions, historyServerOptions, gcs storage, "
             "ingressOptions, ...) and drop RayJob v1alpha1; the program writes none of those (a test validates every "
             "RayJob and RayCluster it renders against v1.5.0's own CRDs where the module is in the Go module cache)"),
    OperatorRelease(
        "cert-manager", "v1.21.2", ("cert-manager.io",), ("cert-manager.",), None, True, "https://charts.jetstack.io/cert-manager",
        "cert-manager",
        note="issues every Certificate of the fleet (data paths, gateway listeners) from the ClusterIssuer hybridml-fleet-ca "
             "(workloads/render/fleet_ca.py); the newest release on the Go module proxy. shared/crds/more holds a later "
             "master commit (2d0d7f7) whose only differences from v1.21.2's CRDs (compared file by file against the "
             "v1.21.2 module) are an Expiration column and ACME `renewalInformationSource`, which the program does not write"),
    OperatorRelease(
        "external-dns", "1.22.0", ("externaldns.k8s.io",), ("external-dns.",), None, True,
        "https://kubernetes-sigs.github.io/external-dns/external-dns", "external-dns",
        note="Route53 records for every hostname the gateways and data stores publish (clusters/dns.py), on cloud "
             "clusters; the chart 1.22.0 runs external-dns v0.22.0, the newest published chart (the v0.23.0 module, the "
             "newest on the Go module proxy, still carries chart 1.22.0). The program writes no DNSEndpoint; shared/crds/"
             "more holds master commit 2bf1bf8, whose dnsendpoints CRD is byte-identical to v0.22.0's and v0.23.0's"),
    OperatorRelease("keda", None, ("keda.sh",), ("keda.",), "8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a", False,
                    note="prerequisite: ScaledObjects of vLLM pipelines (local and sim clusters: keda-sim)"),
    OperatorRelease("kserve", None, ("serving.kserve.io",), ("kserve.",), "aaac4e294dae2c7b1aa1886447793f3aa1c30912", False,
                    note="prerequisite: InferenceServices of Triton pipelines"),
    OperatorRelease("lws", None, ("leaderworkerset.x-k8s.io",), ("lws.",), "060ab4da17eea1f0865fcbd3236bb1075e2cea32", False,
                    note="prerequisite: vLLM replicas wider than a node"),
    OperatorRelease("prometheus-operator", None, ("monitoring.coreos.com",), ("prometheus.",),
                    "6adcebc5076c34f4f55f8f5f7b1e528929373ac7", False, note="prerequisite: ServiceMonitors, PodMonitors, rules"),
    OperatorRelease("feast-operator", None, ("feast.dev",), ("feast.",), "f0bc0700be7029166e6605e407de6d229cd1e93e", False,
                    note="prerequisite: FeatureStores"),
    OperatorRelease("flink-kubernetes-operator", None, ("flink.apache.org",), ("flink.",),
                    "6e9caeb48118934f4311534725196c52159eaa21", False, note="prerequisite: FlinkDeployments of streaming views"),
    OperatorRelease("gateway-api-inference-extension", None, ("inference.networking.k8s.io",), ("gaie.",),
                    "84436a96b9e6ce2b59ddacd3d04c31b4fbd442de", False, note="InferencePools (served with the AI gateway)"),
)}


def release_for_group(group: str) -> OperatorRelease | None:
    """The release that serves an API group (None for core Kubernetes groups)."""
    return next((o for o in OPERATORS.values() if group in o.groups), None)


def chart_version(name: str) -> str:
    """The pinned version of an operator the program installs."""
    version = OPERATORS[name].version
    if version is None:
        raise KeyError(f"{name} is a prerequisite, not a release the program installs")
    return version
