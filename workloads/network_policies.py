"""Default-deny NetworkPolicies with explicit allowed flows for every namespace the stack runs pods in."""
from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from clusters.handle import ClusterHandle
from workloads.kube import child_options, create
from workloads.render import network
from workloads.render.context import SiteContext


@dataclass
class NetworkPoliciesArgs:
    cluster: ClusterHandle
    context: SiteContext
    namespaces: list[network.NamespaceFlows] = field(default_factory=list)
    has_ratelimit: bool = False
    model_egress_cidrs: list[str] = field(default_factory=lambda: ["0.0.0.0/0"])
    stream_egress_cidrs: list[str] = field(default_factory=lambda: ["0.0.0.0/0"])


class NetworkPolicies(pulumi.ComponentResource):
    def __init__(self, name: str, args: NetworkPoliciesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:workloads:NetworkPolicies", name, None, opts)
        ctx = args.context
        serving = [f.namespace for f in args.namespaces]
        objs = network.gateway_namespace(ctx, serving, args.has_ratelimit)
        for f in args.namespaces:
            objs += network.serving_namespace(ctx, f, serving, args.model_egress_cidrs, args.stream_egress_cidrs)
        for m in objs:
            create(f"{name}-{m['metadata']['namespace']}-{m['metadata']['name']}", m, child_options(self, args.cluster))
        self.register_outputs({"namespaces": [ctx.gateway_namespace, *serving]})
