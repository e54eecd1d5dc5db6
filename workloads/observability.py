"""Monitoring of one site: ServiceMonitors/PodMonitors for vLLM, Triton, CPU services, Redis, Qdrant, Flink,
DCGM; a PrometheusRule per pipeline (operational SLOs and quality objectives) and for the feature store p99;
the Grafana dashboards (fleet overview, templated pipeline dashboard) as provisioned ConfigMaps."""
from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from clusters.handle import ClusterHandle
from infra.spec import Environment
from workloads.kube import child_options, create
from workloads.render import observability
from workloads.render.context import SiteContext


@dataclass
class ObservabilityArgs:
    env: Environment
    cluster: ClusterHandle
    context: SiteContext
    pipelines: list[str] = field(default_factory=list)
    replicas: dict[str, int] = field(default_factory=dict)
    """The plan's replicas of each pipeline on this site (the rules' variant names and planned replicas)."""
    plan_sites: dict[str, dict[str, int]] | None = None
    """Every site the plan uses -> its pipelines and replicas (the dashboards). Default: this site only."""
    feature_views: list[str] = field(default_factory=list)
    collections: list[str] = field(default_factory=list)
    gpu_namespace: str = "gpu-operator"


class Observability(pulumi.ComponentResource):
    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:workloads:Observability", name, None, opts)
        env = args.env
        streaming = [v for v in args.feature_views if next(f for f in env.feature_views if f.name == v).streaming]
        has_gpus = any(env.pipeline(p).gpu for p in args.pipelines)
        objs = observability.objects(args.context, env, args.pipelines, args.feature_views, args.collections,
                                     streaming, has_gpus, args.gpu_namespace, args.replicas, args.plan_sites)
        for m in objs:
            create(f"{name}-{m['metadata']['namespace']}-{m['metadata']['name']}-{m['kind'].lower()}", m,
                   child_options(self, args.cluster))
        self.register_outputs({"objects": len(objs)})
