"""The Triton ServingRuntime of one serving namespace on one site (shared by its InferenceServices)."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi

from clusters.handle import ClusterHandle
from workloads.kube import child_options, create
from workloads.render import triton
from workloads.render.context import SiteContext


@dataclass
class TritonRuntimeArgs:
    namespace: str
    cluster: ClusterHandle
    context: SiteContext


class TritonRuntime(pulumi.ComponentResource):
    runtime: pulumi.Resource

    def __init__(self, name: str, args: TritonRuntimeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:workloads:TritonRuntime", name, None, opts)
        self.runtime = create(f"{name}-servingruntime", triton.runtime(args.context, args.namespace),
                              child_options(self, args.cluster))
        self.register_outputs({"name": triton.RUNTIME})
