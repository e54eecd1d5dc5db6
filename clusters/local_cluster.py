"""A site of the `local` stack: a local control plane (hybridml/local) whose nodes are kwok-simulated.

Same baseline (namespaces, Pod Security labels, priority classes, quotas) as the real cloud and
on-prem clusters, so the workloads deploy unchanged; no AWS, Karpenter or GPU operator: kwok nodes
advertise `nvidia.com/gpu` and the GPU-product/instance-type labels themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s

from clusters.baseline import namespaces as baseline_namespaces
from clusters.handle import ClusterHandle
from clusters.kube_baseline import ClusterBaseline, ClusterBaselineArgs, cluster_facts, readiness_gate
from clusters.sizing import QuotaPlan, site_tiers
from infra.spec import CloudSite, Datacenter

DEFAULT_KUBECONFIG = ".local/kubeconfig"


def default_context(site: str) -> str:
    return f"hybridml-{site}"


@dataclass
class LocalClusterArgs:
    site: CloudSite | Datacenter
    quotas: list[QuotaPlan]
    gpu_types: list[str]
    # A path, relative to the project directory: the provider reads the file itself, so no
    # credentials enter the state and restarted control planes (new certificates) cause no diff.
    kubeconfig_path: str = DEFAULT_KUBECONFIG
    context: str | None = None


class LocalCluster(pulumi.ComponentResource):
    handle: ClusterHandle

    def __init__(self, name: str, args: LocalClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:clusters:LocalCluster", name, None, opts)
        site = args.site
        context = args.context or default_context(site.name)
        kind: Literal["cloud", "datacenter"] = "cloud" if isinstance(site, CloudSite) else "datacenter"
        self.provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=args.kubeconfig_path, context=context, enable_server_side_apply=True,
            # `pulumi destroy` after `hybridml local down` must not hang on a cluster that is gone.
            delete_unreachable=True, opts=pulumi.ResourceOptions(parent=self))
        self.baseline = ClusterBaseline(f"{name}-baseline", ClusterBaselineArgs(
            site=site.name, provider=self.provider,
            namespaces=baseline_namespaces(site.name, site_tiers(site), gpu_operator=False,
                                           kubernetes_version=None),
            quotas=args.quotas), opts=pulumi.ResourceOptions(parent=self))
        tiers = [t.value for t in site_tiers(site)]
        gate = readiness_gate(name, parent=self, provider=self.provider, depends_on=list(self.baseline.ready),
                              facts=cluster_facts(site.name, kind, True, tiers, sorted(args.gpu_types)))
        self.handle = ClusterHandle(
            site=site.name, kind=kind, provider=self.provider, simulated=True, gpu_types=sorted(args.gpu_types),
            privacy_tiers=tiers, ready=[gate], endpoint=f"kubeconfig {args.kubeconfig_path} context {context}",
            kubeconfig=args.kubeconfig_path, context=context)
        self.register_outputs({"context": context, "simulated": True})
