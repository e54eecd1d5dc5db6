"""The NVIDIA GPU stack of a cluster with real GPUs: the GPU operator (device plugin, GPU feature
discovery, DCGM exporter) as one pinned Helm release in its documented Pod Security exemption namespace.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from clusters.baseline import GPU_OPERATOR_NAMESPACE
from infra import labels
from infra.versions import chart_version

GPU_OPERATOR_CHART = "gpu-operator"
GPU_OPERATOR_REPO = "https://helm.ngc.nvidia.com/nvidia"
GPU_OPERATOR_CHART_VERSION = chart_version("gpu-operator")   # infra/versions.py; override: hybridml:gpuOperatorChartVersion


@dataclass
class NvidiaGpuStackArgs:
    provider: pulumi.ProviderResource
    chart_version: str = GPU_OPERATOR_CHART_VERSION
    # EKS's AL2023 NVIDIA AMIs ship the driver and container toolkit; on-prem hosts get them from the
    # operator unless the Ansible bootstrap installed them (then set both false).
    install_driver: bool = False
    install_toolkit: bool = False
    depends_on: list[pulumi.Resource] = field(default_factory=list)


def gpu_operator_values(args: NvidiaGpuStackArgs) -> dict:
    return {
        "driver": {"enabled": args.install_driver},
        "toolkit": {"enabled": args.install_toolkit},
        "devicePlugin": {"enabled": True},
        "gfd": {"enabled": True},            # sets nvidia.com/gpu.product, the label workloads select on
        "dcgmExporter": {"enabled": True,
                         # ServiceMonitor needs the Prometheus operator CRDs; the monitoring stack scrapes
                         # the exporter service by annotation instead, so the release never depends on them.
                         "serviceMonitor": {"enabled": False}},
        "migManager": {"enabled": False},
        "daemonsets": {"tolerations": [{"key": labels.GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
                       "priorityClassName": "system-node-critical"},
        "operator": {"defaultRuntime": "containerd"},
    }


class NvidiaGpuStack(pulumi.ComponentResource):
    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: NvidiaGpuStackArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:clusters:NvidiaGpuStack", name, None, opts)
        self.release = k8s.helm.v3.Release(
            f"{name}-gpu-operator",
            name="gpu-operator",
            chart=GPU_OPERATOR_CHART,
            version=args.chart_version,
            repository_opts={"repo": GPU_OPERATOR_REPO},
            namespace=GPU_OPERATOR_NAMESPACE,   # created by ClusterBaseline with its PSS exemption
            values=gpu_operator_values(args),
            atomic=True,
            timeout=900,
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.depends_on or None))
        self.register_outputs({"chart_version": args.chart_version})
