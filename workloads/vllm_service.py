"""vLLM model server of one LLM pipeline on one site (all its A/B variants)."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi

from clusters.handle import ClusterHandle
from infra.labels import namespace_for
from infra.spec import Environment, Pipeline
from workloads.kube import ComponentError, check_tier, child_options, create
from workloads.render import meta, vllm
from workloads.render.context import SiteContext, service_fqdn
from workloads.render.model_pods import pod_tier


@dataclass
class VllmServiceArgs:
    env: Environment
    pipeline: Pipeline
    replicas: int                     # planned replicas on this site (policies/placement)
    cluster: ClusterHandle
    context: SiteContext
    api_key_config: pulumi.Input[str]
    """Secret content of the vLLM `--config` file holding this site's API key (workloads.secrets)."""


class VllmService(pulumi.ComponentResource):
    endpoints: dict[str, str]
    """variant ('' without A/B) -> in-cluster URL of its Service."""

    def __init__(self, name: str, args: VllmServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:workloads:VllmService", name, None, opts)
        p, ctx = args.pipeline, args.context
        if p.engine.kind != "vllm":
            raise ComponentError(self, f"pipeline {p.name} has engine {p.engine.kind}, not vllm")
        check_tier(self, args.cluster, pod_tier(args.env, p), f"pipeline {p.name}")  # its effective tier
        ns = namespace_for(p.privacy_tier)
        child = child_options(self, args.cluster)
        lbls = meta.labels("vllm", "model-server", instance=p.name, site=ctx.site, pipeline=p.name,
                           tier=pod_tier(args.env, p))
        secret = create(f"{name}-config", {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": meta.metadata(vllm.config_secret_name(p), ns, lbls),
            "type": "Opaque", "stringData": {"config.yaml": args.api_key_config}}, child)
        self.endpoints = {}
        for m in vllm.objects(ctx, args.env, p, args.replicas, ns):
            kind, obj = m["kind"], m["metadata"]["name"]
            role = {"Deployment": "deployment", "LeaderWorkerSet": "leaderworkerset", "Service": "service",
                    "PodDisruptionBudget": "pdb", "ScaledObject": "scaledobject"}[kind]
            # KEDA owns the replica count once the ScaledObject exists.
            ignore = ["spec.replicas"] if kind in ("Deployment", "LeaderWorkerSet") else None
            create(f"{name}-{obj}-{role}", m, child_options(self, args.cluster, depends_on=[secret],
                                                            ignore_changes=ignore))
            if kind == "Service":
                variant = m["metadata"]["labels"].get(meta.VARIANT, "")
                self.endpoints[variant] = f"http://{service_fqdn(obj, ns)}:{vllm.PORT}"
        self.register_outputs({"endpoints": self.endpoints})
