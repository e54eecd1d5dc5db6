"""One version per operator: every controller whose custom resources the program writes, pinned once.

Each row says which release serves the program's kinds (its API groups), where that release's CRDs are kept
for validation (files of ../shared/crds and the upstream commit they were taken from, as its README lists
them), and who installs it: the program itself on the cloud clusters it creates (`installed_by_program`),
or the platform team beforehand (a prerequisite that the README lists, known by the upstream commit of
its CRDs: the cluster's release must serve at least those kinds and versions). The Helm charts the program
installs read their versions from here; `tests/workloads/test_versions.py` proves every apiVersion/kind
the program writes is served by the CRDs of the pinned release (and, where `crd_source` names the release's Go
module, by that release's own CRDs), that every kind it writes on a cloud site has a release the program installs
there, and that every kind it writes on a datacenter is installed there by the program (`on_datacenters`) or is a
prerequisite that `hybridml preflight` checks on the live cluster. Pure data.
"""
from __future__ import annotations

from dataclasses import dataclass

from infra.labels import MONITORING_NAMESPACE


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
    app_version: str | None = None   # the operator's own release, where the chart is versioned apart from it
    crd_source: str | None = None
    """`<Go module>@<version>/<folder>`: the release's own CRDs in its Go module (tests/workloads/test_versions.py
    validates every object the program writes of the release's kinds against them)."""
    manifest: str | None = None      # a pinned manifest URL, for a release published without a Helm chart
    on_datacenters: bool = False
    """The program installs it on datacenter clusters too (the gateway's controllers and cert-manager come with
    the workloads on every real cluster); otherwise a datacenter's platform team installs it beforehand."""

    @property
    def operator_version(self) -> str | None:
        return self.app_version or self.version


OPERATORS: dict[str, OperatorRelease] = {o.name: o for o in (
    OperatorRelease(
        "envoy-gateway", "v1.9.1", ("gateway.envoyproxy.io", "gateway.networking.k8s.io"),
        ("envoy-gateway.", "gateway-api."), None, True, "oci://docker.io/envoyproxy/gateway-helm", "envoy-gateway-system",
        crd_source="github.com/envoyproxy/gateway@v1.9.1/charts/gateway-helm/charts/crds/crds", on_datacenters=True,
        note="the newest release; shared/crds holds a later main commit (d32f282) whose only differences from v1.9.1 "
             "are fields the program does not write (ClientTrafficPolicy maxRequestHeaderLimit, EnvoyProxy lua)"),
    OperatorRelease(
        "ai-gateway-crds", "v1.1.0", ("aigateway.envoyproxy.io",), ("envoy-ai-gateway.",),
        "c217da8a539570ba3f6014a60c2687c29a945f1f", True, "oci://docker.io/envoyproxy/ai-gateway-crds-helm",
        "envoy-ai-gateway-system", on_datacenters=True,
        note="v1.1.0 is commit c217da8: v1beta1 routes, backends, security policies; QuotaPolicy"),
    OperatorRelease(
        "ai-gateway", "v1.1.0", (), (), None, True, "oci://docker.io/envoyproxy/ai-gateway-helm", "envoy-ai-gateway-system",
        on_datacenters=True, note="the controller of the CRDs above; the same release"),
    OperatorRelease(
        "karpenter", "1.8.1", ("karpenter.sh", "karpenter.k8s.aws"), ("karpenter.",),
        "1d927085dd81a9df9301e613f371dac5b4d16bfe", True, "oci://public.ecr.aws/karpenter/karpenter", "kube-system"),
    OperatorRelease(
        "gpu-operator", "v25.3.4", (), (), None, True, "https://helm.ngc.nvidia.com/nvidia/gpu-operator", "gpu-operator",
        on_datacenters=True,
        note="writes no custom resources of the program's; installs the device plugin and DCGM exporter"),
    OperatorRelease(
        "kuberay-operator", "1.5.0", ("ray.io",), ("kuberay.",), None, True,
        "https://ray-project.github.io/kuberay-helm/kuberay-operator", "kuberay-system",
        crd_source="github.com/ray-project/kuberay/ray-operator@v1.5.0/config/crd/bases",
        note="RayJobs and RayClusters of batch pipelines; the same release is built from its Go module for the local "
             "control planes (scripts/toolchain/versions.env KUBERAY_VERSION). shared/crds/more holds a later master "
             "commit (feeaf72) whose CRDs add fields to v1.5.0's (authOptions, historyServerOptions, gcs storage, "
             "ingressOptions, ...) and drop RayJob v1alpha1; the program writes none of those (a test validates every "
             "RayJob and RayCluster it renders against v1.5.0's own CRDs where the module is in the Go module cache)"),
    OperatorRelease(
        "cert-manager", "v1.21.2", ("cert-manager.io",), ("cert-manager.",), None, True, "https://charts.jetstack.io/cert-manager",
        "cert-manager", crd_source="github.com/cert-manager/cert-manager@v1.21.2/deploy/crds", on_datacenters=True,
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
    OperatorRelease(
        "keda", "2.20.2", ("keda.sh",), ("keda.",), "8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a", True,
        "https://kedacore.github.io/charts/keda", "keda", crd_source="github.com/kedacore/keda/v2@v2.20.2/config/crd/bases",
        note="ScaledObjects of vLLM pipelines (on Prometheus queue depth). v2.20.2's CRDs are shared/crds' commit 8b4f083 "
             "but for the controller-gen version comment; v2.21.0 adds TriggerAuthentication fields the program does not "
             "write, v2.21.1 needs a newer Go than this toolchain's to fetch"),
    OperatorRelease(
        "kserve", "v0.17.0", ("serving.kserve.io",), ("kserve.",), "aaac4e294dae2c7b1aa1886447793f3aa1c30912", True,
        "oci://ghcr.io/kserve/charts/kserve-resources", "kserve",
        crd_source="github.com/kserve/kserve@v0.17.0/charts/kserve-crd/templates",
        note="InferenceServices and ServingRuntimes of Triton pipelines, in Standard (raw Deployment) mode: no Knative, no "
             "Istio. The same release is built from its Go module for the local control planes (scripts/toolchain/"
             "versions.env KSERVE_VERSION). shared/crds holds master commit aaac4e2 (after v0.17.0), whose CRDs add fields "
             "(ServingRuntime resourceClaims, InferenceService canary/...) the program does not write"),
    OperatorRelease(
        "kserve-crd", "v0.17.0", (), (), None, True, "oci://ghcr.io/kserve/charts/kserve-crd", "kserve",
        note="the CRDs of the kserve row, the same release (its controller chart ships none)"),
    OperatorRelease(
        "lws", "v0.9.0", ("leaderworkerset.x-k8s.io",), ("lws.",), "060ab4da17eea1f0865fcbd3236bb1075e2cea32", True,
        "oci://registry.k8s.io/lws/charts/lws", "lws-system", crd_source="sigs.k8s.io/lws@v0.9.0/config/crd/bases",
        note="LeaderWorkerSets of vLLM replicas wider than a node; v0.9.0's CRD has every field of shared/crds' 060ab4d "
             "(only a bound on an int field differs; v0.8.0 lacks schedulingGroup and podCertificate fields). The chart "
             "is published with the tag's `v`"),
    OperatorRelease(
        "prometheus-operator", "88.2.0", ("monitoring.coreos.com",), ("prometheus.",),
        "6adcebc5076c34f4f55f8f5f7b1e528929373ac7", True,
        "https://prometheus-community.github.io/helm-charts/kube-prometheus-stack", MONITORING_NAMESPACE,
        app_version="v0.93.0",
        crd_source="github.com/prometheus-operator/prometheus-operator@v0.93.0/example/prometheus-operator-crd-full",
        note="kube-prometheus-stack 88.2.0 (Prometheus operator v0.93.0, whose CRDs are shared/crds' 6adcebc byte for "
             "byte) with the site's Prometheus server, Alertmanager and Grafana; selects every ServiceMonitor, "
             "PodMonitor and PrometheusRule of the cluster (clusters/operators.py)"),
    OperatorRelease(
        "feast-operator", "v0.67.0", ("feast.dev",), ("feast.",), "f0bc0700be7029166e6605e407de6d229cd1e93e", True,
        namespace="feast-operator-system",
        manifest="https://raw.githubusercontent.com/feast-dev/feast/refs/tags/v0.67.0/infra/feast-operator/dist/install.yaml",
        note="FeatureStores (feast.dev/v1). Feast publishes its operator as a manifest per release tag, not a Helm chart; "
             "v0.67.0 is the Feast the feature servers run (workloads/images.py, scripts/feast_venv.sh). Its Go module "
             "is not on the Go module proxy, so its CRD is checked only against shared/crds (commit f0bc070)"),
    OperatorRelease(
        "flink-kubernetes-operator", "1.13.0", ("flink.apache.org",), ("flink.",),
        "6e9caeb48118934f4311534725196c52159eaa21", True,
        "https://archive.apache.org/dist/flink/flink-kubernetes-operator-1.13.0/flink-kubernetes-operator", "flink-operator",
        note="FlinkDeployments (v1beta1) of streaming views; the newest release. shared/crds holds a later main commit "
             "(6e9caeb: flinkVersion up to v2_4); the program writes v1_20 (workloads/images.py flink 1.20), which 1.13 "
             "serves. Its webhook certificate comes from cert-manager"),
    OperatorRelease(
        "aws-load-balancer-controller", "1.14.0", (), (), None, True,
        "https://aws.github.io/eks-charts/aws-load-balancer-controller", "kube-system", app_version="v2.14.0",
        note="the NLBs of the gateways' and data stores' LoadBalancer Services (their `aws-load-balancer-type: external` "
             "annotations, workloads/options.py); cloud sites only. The program writes none of its custom resources"),
    OperatorRelease("gateway-api-inference-extension", "v1.6.2", ("inference.networking.k8s.io",), ("gaie.",),
                    "84436a96b9e6ce2b59ddacd3d04c31b4fbd442de", False,
                    note="InferencePools: the program writes none today, so nothing installs it; v1.6.2's CRD is "
                         "shared/crds' 84436a9 but for its bundle-version annotation"),
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
