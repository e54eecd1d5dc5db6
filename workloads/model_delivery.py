"""Model delivery of one site: the `model-server` ServiceAccount of each serving namespace with vLLM or Triton
pipelines, and the shared vLLM model cache claim of each namespace with vLLM (workloads/render/model_delivery.py)."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi

from clusters.handle import ClusterHandle
from infra.spec import Environment
from workloads.kube import child_options, create
from workloads.render import model_delivery
from workloads.render.context import SiteContext


@dataclass
class ModelDeliveryArgs:
    env: Environment
    pipelines: dict[str, int]          # placed here (policies/placement)
    cluster: ClusterHandle
    context: SiteContext
    cache_storage_class: str | None
    """ReadWriteMany class of the cache (cloud: clusters.model_access.MODEL_CACHE_CLASS; None: the cluster default)."""


class ModelDelivery(pulumi.ComponentResource):
    objects: list[pulumi.Resource]

    def __init__(self, name: str, args: ModelDeliveryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:workloads:ModelDelivery", name, None, opts)
        manifests = model_delivery.objects(args.context, args.env, args.pipelines, args.cache_storage_class)
        self.objects = [create(f"{name}-{m['metadata']['namespace']}-{m['metadata']['name']}-{m['kind'].lower()}", m,
                               child_options(self, args.cluster)) for m in manifests]
        self.register_outputs({"objects": [f"{m['kind']}/{m['metadata']['namespace']}/{m['metadata']['name']}"
                                           for m in manifests]})
