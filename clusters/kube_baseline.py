"""The Kubernetes objects every cluster gets, whatever runs it: namespaces, priority classes, quotas.

Cloud, on-prem and local clusters all build one `ClusterBaseline` on their provider, so the
workloads see the same namespaces, Pod Security labels, priority classes and quotas everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from clusters.baseline import (
    LIMIT_RANGE_DEFAULT_REQUEST,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    PRIORITY_CLASSES,
    NamespaceSpec,
    PriorityClassSpec,
)
from clusters.sizing import QuotaPlan


@dataclass
class ClusterBaselineArgs:
    site: str
    provider: pulumi.ProviderResource
    namespaces: list[NamespaceSpec]
    quotas: list[QuotaPlan]
    priority_classes: tuple[PriorityClassSpec, ...] = PRIORITY_CLASSES
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class ClusterBaseline(pulumi.ComponentResource):
    """Namespaces (Pod Security labels), priority classes, and per tier namespace a ResourceQuota sized
    from the plan plus a LimitRange with default requests."""

    namespaces: dict[str, k8s.core.v1.Namespace]
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: ClusterBaselineArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:clusters:ClusterBaseline", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.depends_on or None)
        common = {MANAGED_BY: MANAGED_BY_VALUE}

        self.namespaces = {}
        for ns in args.namespaces:
            # Explicit metadata.name: workloads address namespaces by these names (infra.labels).
            self.namespaces[ns.name] = k8s.core.v1.Namespace(
                f"{name}-ns-{ns.name}",
                metadata={"name": ns.name, "labels": ns.labels, "annotations": ns.annotations or None},
                opts=child)

        priority = []
        for pc in args.priority_classes:
            priority.append(k8s.scheduling.v1.PriorityClass(
                f"{name}-pc-{pc.name}",
                metadata={"name": pc.name, "labels": common},
                value=pc.value, global_default=False, description=pc.description,
                preemption_policy="PreemptLowerPriority" if pc.preempting else "Never",
                opts=child))

        limits: list[pulumi.CustomResource] = []
        for q in args.quotas:
            namespace = self.namespaces.get(q.namespace)
            if namespace is None:
                raise pulumi.RunError(
                    f"{name}: quota for namespace {q.namespace!r}, which site {args.site} does not create "
                    f"(its namespaces: {', '.join(self.namespaces)}); the plan placed tier {q.tier} work there")
            in_ns = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=[namespace])
            limits.append(k8s.core.v1.ResourceQuota(
                f"{name}-quota-{q.namespace}",
                metadata={"name": "hybridml-plan", "namespace": q.namespace,
                          "labels": common, "annotations": {"hybridml.io/pipelines": str(len(q.pipelines))}},
                spec={"hard": q.hard()},
                opts=in_ns))
            limits.append(k8s.core.v1.LimitRange(
                f"{name}-limits-{q.namespace}",
                metadata={"name": "hybridml-defaults", "namespace": q.namespace, "labels": common},
                spec={"limits": [{"type": "Container", "defaultRequest": dict(LIMIT_RANGE_DEFAULT_REQUEST)}]},
                opts=in_ns))

        self.ready = [*self.namespaces.values(), *priority, *limits]
        self.register_outputs({"namespaces": list(self.namespaces)})


READY_GATE_NAMESPACE = "kube-system"
READY_GATE_NAME = "hybridml-cluster"


def readiness_gate(name: str, *, parent: pulumi.Resource, provider: pulumi.ProviderResource,
                   facts: dict[str, str], depends_on: list[pulumi.Resource]) -> k8s.core.v1.ConfigMap:
    """One object per cluster that depends on everything the cluster component makes ready.

    It becomes `ClusterHandle.ready`, so each workload object depends on this one resource instead of
    on every namespace, quota, priority class and controller release: dependencies are transitive in
    the engine (created after, deleted before), and the SDK resolves one dependency per object instead
    of ~20 (at prod scale ~8,000 objects: a quarter of the program's run time under mocks). Its data
    records the cluster's facts from the plan (site, kind, simulated, tiers, GPU types) for tools
    that inspect live clusters (`hybridml status`, issue 8).
    """
    return k8s.core.v1.ConfigMap(
        f"{name}-ready",
        metadata={"name": READY_GATE_NAME, "namespace": READY_GATE_NAMESPACE,
                  "labels": {MANAGED_BY: MANAGED_BY_VALUE}},
        data=dict(sorted(facts.items())),
        opts=pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=depends_on))


def cluster_facts(site: str, kind: str, simulated: bool, tiers: list[str], gpu_types: list[str]) -> dict[str, str]:
    return {"site": site, "site-kind": kind, "simulated": str(simulated).lower(),
            "privacy-tiers": ",".join(tiers), "gpu-types": ",".join(gpu_types)}
