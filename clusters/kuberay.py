"""The KubeRay operator of a cloud cluster: one pinned Helm release (infra/versions.py) in its own namespace, on the
system nodes. It reconciles the RayJobs and RayClusters of the batch pipelines (workloads/batch_job.py).

Datacenter clusters get it from the platform team, like KEDA or KServe (README "Operators: one version each, ...");
the local control planes run the same release built from its Go module (hybridml/local/components.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from clusters.baseline import MANAGED_BY, MANAGED_BY_VALUE, PSS_AUDIT, PSS_ENFORCE, PSS_WARN
from infra import labels
from infra.versions import OPERATORS, chart_version

KUBERAY = OPERATORS["kuberay-operator"]
KUBERAY_REPO, _, KUBERAY_CHART = (KUBERAY.chart or "").rpartition("/")
KUBERAY_NAMESPACE = KUBERAY.namespace or "kuberay-system"
KUBERAY_CHART_VERSION = chart_version("kuberay-operator")
# The chart's default requests (= limits): what clusters/sizing.py counts on the system nodes.
KUBERAY_RESOURCES = {"cpu": "100m", "memory": "512Mi"}


@dataclass
class KubeRayOperatorArgs:
    provider: pulumi.ProviderResource
    chart_version: str = KUBERAY_CHART_VERSION
    node_selector: dict[str, str] = field(default_factory=lambda: {labels.NODE_ROLE: "system"})
    depends_on: list[pulumi.Resource] = field(default_factory=list)


def kuberay_values(args: KubeRayOperatorArgs) -> dict:
    """Helm values: the operator (every namespace, the chart's defaults otherwise) on the system nodes, its container
    under Pod Security `restricted`."""
    return {
        "nodeSelector": dict(args.node_selector),
        "resources": {"requests": dict(KUBERAY_RESOURCES), "limits": dict(KUBERAY_RESOURCES)},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"}},
    }


class KubeRayOperator(pulumi.ComponentResource):
    release: k8s.helm.v3.Release
    ready: list[pulumi.Resource]
    """What the cluster's readiness gate waits for: the operator's namespace and its release."""

    def __init__(self, name: str, args: KubeRayOperatorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:clusters:KubeRayOperator", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.depends_on or None)
        namespace = k8s.core.v1.Namespace(
            f"{name}-ns", metadata={"name": KUBERAY_NAMESPACE, "labels": {
                MANAGED_BY: MANAGED_BY_VALUE, PSS_ENFORCE: "restricted", PSS_AUDIT: "restricted", PSS_WARN: "restricted"}},
            opts=child)
        self.release = k8s.helm.v3.Release(
            f"{name}-kuberay-operator",
            name="kuberay-operator",
            chart=KUBERAY_CHART,
            version=args.chart_version,
            repository_opts={"repo": KUBERAY_REPO},
            namespace=KUBERAY_NAMESPACE,
            values=kuberay_values(args),
            atomic=True,
            timeout=600,
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=[namespace]))
        self.ready = [namespace, self.release]
        self.register_outputs({"chart_version": args.chart_version, "namespace": KUBERAY_NAMESPACE})
