"""Qdrant for one collection on one site: StatefulSet, Services, PDB, collection Job, snapshot CronJob, and its TLS
Certificate from the fleet issuer (workloads/render/qdrant.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from clusters.handle import ClusterHandle
from infra.labels import namespace_for
from infra.spec import VectorCollection
from workloads.kube import check_tier, child_options, create
from workloads.render import meta, qdrant
from workloads.render.context import SiteContext, service_fqdn
from workloads.render.data import QDRANT_HTTP, qdrant_name


@dataclass
class VectorDbArgs:
    collection: VectorCollection
    cluster: ClusterHandle
    context: SiteContext
    api_key: pulumi.Input[str]
    fleet_sources: list[str] = field(default_factory=list)


class VectorDb(pulumi.ComponentResource):
    endpoint: str

    def __init__(self, name: str, args: VectorDbArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:workloads:VectorDb", name, None, opts)
        c, ctx = args.collection, args.context
        check_tier(self, args.cluster, c.privacy_tier.value, f"collection {c.name}")
        ns = namespace_for(c.privacy_tier)
        lbls = meta.labels("qdrant", "vector-db", instance=qdrant_name(c.name), site=ctx.site, tier=c.privacy_tier.value)
        key = pulumi.Output.secret(args.api_key)

        def auth_file(k: str) -> pulumi.Output[str]:
            return key.apply(lambda s: qdrant.auth_files(s)[k])

        auth = create(f"{name}-auth", {
            "apiVersion": "v1", "kind": "Secret", "metadata": meta.metadata(qdrant.auth_secret_name(c), ns, lbls),
            "type": "Opaque",
            "stringData": {k: auth_file(k) for k in ("config.yaml", "api-key", "curl-headers")}},
            child_options(self, args.cluster))
        for m in qdrant.objects(ctx, c, ns, fleet_sources=args.fleet_sources):
            create(f"{name}-{m['metadata']['name']}-{m['kind'].lower()}", m,
                   child_options(self, args.cluster, depends_on=[auth]))
        self.endpoint = f"https://{service_fqdn(qdrant_name(c.name), ns)}:{QDRANT_HTTP}"   # TLS only (render/qdrant.py)
        self.register_outputs({"endpoint": self.endpoint})
