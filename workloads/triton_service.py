"""Triton through KServe: the ServingRuntime of one namespace (`TritonRuntime`) is created by the stack
once per (site, namespace); this component is one pipeline's InferenceService(s) on one site."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi

from clusters.handle import ClusterHandle
from infra.labels import namespace_for
from infra.spec import Environment, Pipeline
from workloads.kube import ComponentError, check_tier, child_options, create
from workloads.render import meta, triton
from workloads.render.context import SiteContext, service_fqdn
from workloads.render.model_pods import pod_tier


@dataclass
class TritonServiceArgs:
    env: Environment
    pipeline: Pipeline
    replicas: int
    cluster: ClusterHandle
    context: SiteContext
    runtime: pulumi.Resource | None = None
    """The namespace's ServingRuntime resource (the InferenceService names it)."""


class TritonService(pulumi.ComponentResource):
    endpoints: dict[str, str]

    def __init__(self, name: str, args: TritonServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:workloads:TritonService", name, None, opts)
        p = args.pipeline
        if p.engine.kind != "triton":
            raise ComponentError(self, f"pipeline {p.name} has engine {p.engine.kind}, not triton")
        check_tier(self, args.cluster, pod_tier(args.env, p), f"pipeline {p.name}")  # its effective tier
        ns = namespace_for(p.privacy_tier)
        deps = [args.runtime] if args.runtime is not None else []
        self.endpoints = {}
        for m in triton.inference_services(args.context, args.env, p, args.replicas, ns):
            obj = m["metadata"]["name"]
            create(f"{name}-{obj}-isvc", m, child_options(self, args.cluster, depends_on=deps))
            self.endpoints[m["metadata"]["labels"].get(meta.VARIANT, "")] = f"http://{service_fqdn(obj, ns)}"
        self.register_outputs({"endpoints": self.endpoints})
