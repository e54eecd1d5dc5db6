"""A batch pipeline's share at one site: its RayJob (one-off) or RayCluster + CronJob (recurring), the vLLM script,
and the NetworkPolicy its Ray pods need (workloads/render/ray.py builds them)."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi

from clusters.handle import ClusterHandle
from clusters.kuberay import KUBERAY_NAMESPACE
from infra.batch import BatchPipeline
from infra.labels import namespace_for
from policies.placement.plan import BatchPlacement
from workloads.kube import ComponentError, check_tier, child_options, create
from workloads.render import ray
from workloads.render.context import SiteContext


@dataclass
class BatchJobArgs:
    batch: BatchPipeline
    placement: BatchPlacement
    cluster: ClusterHandle
    context: SiteContext
    operator_namespace: str = KUBERAY_NAMESPACE


class BatchJob(pulumi.ComponentResource):
    kind: str          # RayJob | RayCluster
    name: str          # its object name
    namespace: str

    def __init__(self, name: str, args: BatchJobArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:workloads:BatchJob", name, None, opts)
        b, ctx = args.batch, args.context
        share = args.placement.site(ctx.site)
        if share is None:
            raise ComponentError(self, f"batch pipeline {b.name} has no workers at {ctx.site} in the plan")
        check_tier(self, args.cluster, b.privacy_tier, f"batch pipeline {b.name}")
        self.namespace = namespace_for(b.privacy_tier)
        self.name = ray.name(b)
        self.kind = "RayJob" if b.schedule is None else "RayCluster"
        first: list[pulumi.Resource] = []
        for m in ray.objects(ctx, b, args.placement, self.namespace):
            obj, kind = m["metadata"]["name"], m["kind"]
            # the script and the head's service account first: the head mounts and names them, and starts at once
            # a recurring pipeline's workers are Ray's autoscaler's to scale (0 between runs): an update leaves them be
            ignore = ["spec.workerGroupSpecs[*].replicas"] if kind == "RayCluster" else None
            res = create(f"{name}-{obj}-{kind.lower()}", m,
                         child_options(self, args.cluster, depends_on=first, ignore_changes=ignore))
            if kind in ("ConfigMap", "ServiceAccount"):
                first.append(res)
        for m in ray.network_policies(ctx, b, self.namespace, args.operator_namespace):
            create(f"{name}-{m['metadata']['name']}-networkpolicy", m, child_options(self, args.cluster))
        self.register_outputs({"kind": self.kind, "name": self.name, "namespace": self.namespace,
                               "workers": share.workers})
