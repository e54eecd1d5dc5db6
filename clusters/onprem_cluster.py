"""One own datacenter: its Kubernetes cluster (bootstrapped by datacenter/ Ansible), reached with a
kubeconfig from a Pulumi secret, given the same baseline as every other cluster.

Node labels and taints (topology.kubernetes.io/region|zone, hybridml.io/datacenter|rack|privacy-zone
and the privacy-zone taint of pii/restricted racks) are NOT patched from here: the Ansible bootstrap
sets them at `kubeadm join` (kubelet --node-labels, registration taints; datacenter/inventory.py
node_labels/node_taints). Why:
- a node carries them from its first heartbeat, so there is no window in which the scheduler could
  put a pii pod on a node that is not yet labelled or tainted;
- the site stack does not grow with the host count (prod has 1,160 hosts: 1,160 NodePatch resources,
  each a refresh/diff per `up`, would dominate the stack; issue 8 needs site stacks that preview fast);
- a NodePatch for a host that has not joined yet fails the whole update.
tests/clusters/test_onprem_cluster.py checks that the inventory labels every key the workloads rely on.
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from clusters.baseline import namespaces as baseline_namespaces
from clusters.gpu_stack import GPU_OPERATOR_CHART_VERSION, NvidiaGpuStack, NvidiaGpuStackArgs
from clusters.handle import ClusterHandle
from clusters.kube_baseline import ClusterBaseline, ClusterBaselineArgs, cluster_facts, readiness_gate
from clusters.sizing import QuotaPlan, site_tiers
from infra.spec import Datacenter


@dataclass
class OnPremClusterArgs:
    site: Datacenter
    kubeconfig: pulumi.Input[str]        # a Pulumi secret (config hybridml:onpremKubeconfig-<dc>)
    quotas: list[QuotaPlan]
    context: str | None = None           # context within the kubeconfig; default: its current-context
    gpu_operator_chart_version: str = GPU_OPERATOR_CHART_VERSION
    # Own hosts have no driver preinstalled unless the bootstrap did it; the operator installs it.
    install_gpu_driver: bool = True


class OnPremCluster(pulumi.ComponentResource):
    handle: ClusterHandle

    def __init__(self, name: str, args: OnPremClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:clusters:OnPremCluster", name, None, opts)
        site = args.site
        gpu_types = sorted({h.gpu.type for _, h in site.all_hosts() if h.gpu})
        self.provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=pulumi.Output.secret(args.kubeconfig), context=args.context,
            enable_server_side_apply=True, opts=pulumi.ResourceOptions(parent=self))
        self.baseline = ClusterBaseline(f"{name}-baseline", ClusterBaselineArgs(
            site=site.name, provider=self.provider,
            namespaces=baseline_namespaces(site.name, site_tiers(site), gpu_operator=bool(gpu_types)),
            quotas=args.quotas), opts=pulumi.ResourceOptions(parent=self))
        ready: list[pulumi.Resource] = list(self.baseline.ready)
        if gpu_types:
            gpu = NvidiaGpuStack(f"{name}-nvidia", NvidiaGpuStackArgs(
                provider=self.provider, chart_version=args.gpu_operator_chart_version,
                install_driver=args.install_gpu_driver, install_toolkit=args.install_gpu_driver,
                depends_on=list(self.baseline.ready)), opts=pulumi.ResourceOptions(parent=self))
            ready.append(gpu.release)
        tiers = [t.value for t in site_tiers(site)]
        gate = readiness_gate(name, parent=self, provider=self.provider, depends_on=ready,
                              facts=cluster_facts(site.name, "datacenter", False, tiers, gpu_types))
        self.handle = ClusterHandle(site=site.name, kind="datacenter", provider=self.provider, simulated=False,
                                    gpu_types=gpu_types, privacy_tiers=tiers, ready=[gate],
                                    endpoint=site.kubernetes_api,
                                    kubeconfig=pulumi.Output.secret(args.kubeconfig), context=args.context)
        self.register_outputs({"endpoint": site.kubernetes_api or "", "gpu_types": gpu_types})
