"""The online store of one feature view on one site: Redis + Feast FeatureStore (+ Flink ingestion), each serving
TLS with a certificate of the fleet issuer (workloads/render/certificates.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from clusters.handle import ClusterHandle
from infra.labels import namespace_for
from infra.spec import FeatureView
from workloads.kube import check_tier, child_options, create
from workloads.render import feature_store as fs
from workloads.render import meta
from workloads.render.context import SiteContext, service_fqdn
from workloads.render.data import REDIS_PORT, redis_name


@dataclass
class FeatureStoreArgs:
    view: FeatureView
    cluster: ClusterHandle
    context: SiteContext
    password: pulumi.Input[str]
    """Redis password (workloads.secrets): stays an Output secret, written only into Secrets."""
    fleet_sources: list[str] = field(default_factory=list)
    """Networks of the other sites whose pipelines read this view here (adds an internal load balancer admitting
    only them)."""


class FeatureStore(pulumi.ComponentResource):
    endpoint: str

    def __init__(self, name: str, args: FeatureStoreArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:workloads:FeatureStore", name, None, opts)
        v, ctx = args.view, args.context
        check_tier(self, args.cluster, v.privacy_tier.value, f"feature view {v.name}")
        ns = namespace_for(v.privacy_tier)
        lbls = meta.labels("redis", "online-store", instance=redis_name(v.name), site=ctx.site, tier=v.privacy_tier.value)
        pw = pulumi.Output.secret(args.password)

        def auth_file(k: str) -> pulumi.Output[str]:
            return pw.apply(lambda p: fs.auth_files(v, p)[k])

        auth = create(f"{name}-auth", {
            "apiVersion": "v1", "kind": "Secret", "metadata": meta.metadata(fs.auth_secret_name(v), ns, lbls),
            "type": "Opaque",
            "stringData": {k: auth_file(k) for k in fs.auth_files(v, "")}},
            child_options(self, args.cluster))
        store = create(f"{name}-feast-store", {
            "apiVersion": "v1", "kind": "Secret", "metadata": meta.metadata(fs.feast_secret_name(v), ns, lbls),
            "type": "Opaque", "stringData": {"redis": pw.apply(lambda p: fs.feast_store_secret(v, ns, p))}},
            child_options(self, args.cluster))
        repo = create(f"{name}-feast-repo", fs.feast_repo_object(ctx, v, ns), child_options(self, args.cluster))
        redis = []
        for m in fs.redis_objects(ctx, v, ns, fleet_sources=args.fleet_sources):
            redis.append(create(f"{name}-{m['metadata']['name']}-{m['kind'].lower()}", m,
                                child_options(self, args.cluster, depends_on=[auth])))
        feast_cert = create(f"{name}-feast-certificate", fs.feast_certificate(ctx, v, ns), child_options(self, args.cluster))
        feast = fs.feast_object(ctx, v, ns)
        create(f"{name}-featurestore", feast, child_options(self, args.cluster, depends_on=[store, repo, feast_cert, *redis]))
        if v.streaming:
            for m in fs.flink_objects(ctx, v, ns):
                create(f"{name}-{m['metadata']['name']}-{m['kind'].lower()}", m,
                       child_options(self, args.cluster, depends_on=[auth, *redis]))
        self.endpoint = f"{service_fqdn(redis_name(v.name), ns)}:{REDIS_PORT}"
        self.register_outputs({"endpoint": self.endpoint})
