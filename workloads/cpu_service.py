"""A CPU inference service of one pipeline on one site: Deployment + Service + PDB + HPA/KEDA per variant,
plus the credentials of the data services it reads (as files)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi

from clusters.handle import ClusterHandle
from infra.labels import namespace_for
from infra.spec import Environment, Pipeline
from workloads.kube import ComponentError, check_tier, child_options, create
from workloads.planning import DataRead
from workloads.render import certificates, cpu, data, meta
from workloads.render.context import SiteContext, service_fqdn
from workloads.render.model_pods import pod_tier


@dataclass
class CpuServiceArgs:
    env: Environment
    pipeline: Pipeline
    replicas: int
    cluster: ClusterHandle
    context: SiteContext
    reads: list[DataRead] = field(default_factory=list)
    credentials: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """file name -> secret value: passwords/API keys of the data services in `reads`."""


class CpuService(pulumi.ComponentResource):
    endpoints: dict[str, str]

    def __init__(self, name: str, args: CpuServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:workloads:CpuService", name, None, opts)
        p, ctx = args.pipeline, args.context
        if p.engine.kind != "cpu":
            raise ComponentError(self, f"pipeline {p.name} has engine {p.engine.kind}, not cpu")
        check_tier(self, args.cluster, pod_tier(args.env, p), f"pipeline {p.name}")  # its effective tier
        ns = namespace_for(p.privacy_tier)
        deps = []
        if args.credentials:
            lbls = meta.labels(p.name, "model-server", instance=p.name, site=ctx.site, pipeline=p.name,
                               tier=pod_tier(args.env, p))
            deps.append(create(f"{name}-credentials", {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": meta.metadata(cpu.credentials_secret_name(p), ns, lbls),
                "type": "Opaque", "stringData": dict(args.credentials)}, child_options(self, args.cluster)))
        if args.reads:   # every data store speaks TLS: the pipeline's certificate brings it the fleet CA (and a client cert)
            lbls = meta.labels(p.name, "model-server", instance=p.name, site=ctx.site, pipeline=p.name,
                               tier=pod_tier(args.env, p))
            deps.append(create(f"{name}-data-client-certificate",
                               certificates.client_certificate(p.name, ns, ctx.site, lbls, ctx.cert_issuer),
                               child_options(self, args.cluster)))
        env_vars = data.client_env(args.reads, ctx.site, ctx.domain)
        self.endpoints = {}
        for m in cpu.objects(ctx, args.env, p, args.replicas, ns, env_vars, bool(args.credentials)):
            kind, obj = m["kind"], m["metadata"]["name"]
            ignore = ["spec.replicas"] if kind == "Deployment" else None
            create(f"{name}-{obj}-{kind.lower()}", m,
                   child_options(self, args.cluster, depends_on=deps, ignore_changes=ignore))
            if kind == "Service":
                self.endpoints[m["metadata"]["labels"].get(meta.VARIANT, "")] = f"http://{service_fqdn(obj, ns)}"
        self.register_outputs({"endpoints": self.endpoints})
