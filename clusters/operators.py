"""The operators of a cloud cluster's platform (clusters/operator_values.py decides which, in what order and with which
values; infra/versions.py pins each): cert-manager, KEDA, KServe, LeaderWorkerSet, kube-prometheus-stack, the Feast
and Flink operators and the AWS Load Balancer Controller, each a pinned Helm release (the Feast operator: its pinned
release manifest) that waits until its pods, CRDs and webhooks are ready (`atomic`, Helm's wait) before anything that
follows it. The cluster's readiness gate waits for all of them, so no custom resource of their kinds is written
before its controller and webhooks serve it.

Datacenter clusters get these from the platform team instead (README "Prerequisites"; `hybridml preflight` checks).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from clusters.baseline import MANAGED_BY, MANAGED_BY_VALUE, PSS_AUDIT, PSS_ENFORCE, PSS_WARN
from clusters.operator_values import (
    LOAD_BALANCER_SERVICE_ACCOUNT,
    OperatorInstall,
    install_plan,
    load_balancer_controller_values,
)


@dataclass
class PlatformOperatorsArgs:
    provider: pulumi.ProviderResource
    cluster_name: str
    region: str
    vpc_id: pulumi.Input[str]
    storage_class: str                                   # Prometheus's volume (the cluster's encrypted gp3 class)
    depends_on: list[pulumi.Resource] = field(default_factory=list)          # namespaces, system nodes, storage
    load_balancer_identity: list[pulumi.Resource] = field(default_factory=list)
    """The Pod Identity association of the Load Balancer Controller's role: it must exist before its pods start."""


class PlatformOperators(pulumi.ComponentResource):
    releases: dict[str, pulumi.Resource]
    ready: list[pulumi.Resource]
    """Every namespace and release made here: what the cluster's readiness gate waits for."""

    def __init__(self, name: str, args: PlatformOperatorsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:clusters:PlatformOperators", name, None, opts)
        self.releases = {}
        self.ready = []
        namespaces: dict[str, pulumi.Resource] = {}
        for step in install_plan(args.storage_class):
            release = step.release
            after = [*args.depends_on, *(self.releases[a] for a in step.after)]
            if step.own_namespace and release.namespace not in namespaces:
                namespaces[release.namespace or step.name] = k8s.core.v1.Namespace(
                    f"{name}-{step.name}-ns", metadata={"name": release.namespace, "labels": {
                        MANAGED_BY: MANAGED_BY_VALUE, PSS_ENFORCE: "restricted", PSS_AUDIT: "restricted",
                        PSS_WARN: "restricted"}},
                    opts=pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.depends_on or None))
                self.ready.append(namespaces[release.namespace or step.name])
            if release.namespace in namespaces:
                after.append(namespaces[release.namespace or step.name])
            values: pulumi.Input[dict] = step.values or {}
            if step.name == "aws-load-balancer-controller":
                after += args.load_balancer_identity
                values = pulumi.Output.from_input(args.vpc_id).apply(lambda vpc: load_balancer_controller_values(
                    cluster_name=args.cluster_name, region=args.region, vpc_id=vpc,
                    service_account=LOAD_BALANCER_SERVICE_ACCOUNT))
            self.releases[step.name] = self._install(name, step, values, after, args.provider)
            self.ready.append(self.releases[step.name])
        self.register_outputs({"releases": {n: OperatorInstall(n).release.version for n in self.releases}})

    def _install(self, name: str, step: OperatorInstall, values, after: list[pulumi.Resource],
                 provider: pulumi.ProviderResource) -> pulumi.Resource:
        release = step.release
        opts = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=after or None)
        if release.manifest:
            # no chart upstream: the release's own manifest, by its tag; the provider waits for every object it makes
            return k8s.yaml.v2.ConfigFile(f"{name}-{step.name}", file=release.manifest, opts=opts)
        repo, _, chart = (release.chart or "").rpartition("/")
        oci = repo.startswith("oci://")
        return k8s.helm.v3.Release(
            f"{name}-{step.name}", name=step.name, chart=release.chart if oci else chart, version=release.version,
            repository_opts=None if oci else {"repo": repo}, namespace=release.namespace,
            values=values, atomic=True, cleanup_on_fail=True, timeout=900, opts=opts)
