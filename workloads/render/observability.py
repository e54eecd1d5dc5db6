"""Scrape configs (ServiceMonitor/PodMonitor), rules (PrometheusRule: per pipeline `slo` and `quality`, the feature
store p99) and dashboards (`dashboards`) of one site. Pure."""
from __future__ import annotations

from collections.abc import Mapping

from infra import labels as L
from infra.labels import namespace_for
from infra.spec import Environment
from workloads.render import dashboards, meta, quality, slo
from workloads.render.context import SiteContext, service_fqdn
from workloads.render.data import qdrant_name
from workloads.render.qdrant import auth_secret_name as qdrant_secret
from workloads.render.qdrant import tls_secret as qdrant_tls_secret
from workloads.render.triton import METRICS_PORT as TRITON_METRICS

MON = "monitoring.coreos.com/v1"
FEATURE_P99_MS = 50.0
"""Feature lookups at 50 ms p99 (the reference platform's figure, README)."""


def _lbl(ctx: SiteContext, component: str, instance: str) -> dict:
    return meta.labels("prometheus", component, instance=instance, site=ctx.site)


def _match(name: str, component: str | None = None) -> dict:
    out = {"app.kubernetes.io/name": name}
    if component:
        out["app.kubernetes.io/component"] = component
    return out


def pipeline_rules(ctx: SiteContext, env: Environment, name: str, replicas: int) -> dict:
    """One PrometheusRule per pipeline and site: its operational SLO group and, with objectives, its quality group.
    (Per pipeline, not per namespace: a namespace's rules for 150 pipelines would approach the 1 MiB object limit.)"""
    p = env.pipeline(name)
    ns = namespace_for(p.privacy_tier)
    t = slo.target(ctx.site, env, p, replicas, ns)
    groups = [{"name": f"pipeline-{name}", "interval": "1m", "rules": slo.rules(t)}]
    q = quality.rules(t)
    if q:
        groups.append({"name": f"pipeline-quality-{name}", "interval": "1m", "rules": q})
    rule_name = meta.k8s_name(name, "slos")
    lbls = {**_lbl(ctx, "rules", rule_name), L.PIPELINE: name}
    return {"apiVersion": MON, "kind": "PrometheusRule", "metadata": meta.metadata(rule_name, ns, lbls),
            "spec": {"groups": groups}}


def objects(ctx: SiteContext, env: Environment, pipelines: list[str], feature_views: list[str],
            collections: list[str], streaming_views: list[str], has_gpus: bool, gpu_namespace: str,
            replicas: Mapping[str, int] | None = None, plan_sites: Mapping[str, Mapping[str, int]] | None = None) -> list[dict]:
    """Monitoring objects of one site. `replicas`: the plan's replicas of each pipeline here (default 1);
    `plan_sites`: every site the plan uses -> its pipelines and replicas, for the dashboards (default: this site)."""
    replicas = replicas or {}
    out: list[dict] = []
    by_ns: dict[str, dict[str, list[str]]] = {}
    for name in pipelines:
        p = env.pipeline(name)
        by_ns.setdefault(namespace_for(p.privacy_tier), {}).setdefault(p.engine.kind, []).append(name)
    data_ns: dict[str, list[str]] = {}
    for v in feature_views:
        fv = next(f for f in env.feature_views if f.name == v)
        data_ns.setdefault(namespace_for(fv.privacy_tier), []).append(v)

    for ns, engines in sorted(by_ns.items()):
        if "vllm" in engines:
            out.append({"apiVersion": MON, "kind": "ServiceMonitor",
                        "metadata": meta.metadata("vllm", ns, _lbl(ctx, "service-monitor", "vllm")),
                        "spec": {"selector": {"matchLabels": _match("vllm", "model-server")},
                                 "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}]}})
        if "triton" in engines:
            out.append({"apiVersion": MON, "kind": "PodMonitor",
                        "metadata": meta.metadata("triton", ns, _lbl(ctx, "pod-monitor", "triton")),
                        "spec": {"selector": {"matchLabels": _match("triton", "model-server")},
                                 "podMetricsEndpoints": [{"portNumber": TRITON_METRICS, "path": "/metrics",
                                                          "interval": "15s"},
                                                         {"port": "http-usermetric", "path": "/metrics",
                                                          "interval": "15s"}]}})
        if "cpu" in engines:
            out.append({"apiVersion": MON, "kind": "ServiceMonitor",
                        "metadata": meta.metadata("cpu-services", ns, _lbl(ctx, "service-monitor", "cpu-services")),
                        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/component": "model-server",
                                                              "app.kubernetes.io/part-of": meta.PART_OF},
                                              "matchExpressions": [{"key": "app.kubernetes.io/name",
                                                                    "operator": "NotIn", "values": ["vllm", "triton"]}]},
                                 "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}]}})
        for _, names in sorted(engines.items()):
            out += [pipeline_rules(ctx, env, name, replicas.get(name, 1)) for name in sorted(names)]

    for ns, views in sorted(data_ns.items()):
        out.append({"apiVersion": MON, "kind": "PodMonitor",
                    "metadata": meta.metadata("redis", ns, _lbl(ctx, "pod-monitor", "redis")),
                    "spec": {"selector": {"matchLabels": _match("redis", "online-store")},
                             "podMetricsEndpoints": [{"port": "metrics", "interval": "15s"}]}})
        out.append({"apiVersion": MON, "kind": "PrometheusRule",
                    "metadata": meta.metadata("feature-store-slos", ns, _lbl(ctx, "rules", "feature-store-slos")),
                    "spec": {"groups": [{"name": f"feature-store-latency-{ns}", "interval": "1m", "rules": [{
                        "alert": "FeatureLookupP99AboveBudget",
                        "expr": (f'histogram_quantile(0.99, sum by (le) (rate(redis_commands_latencies_usec_bucket{{'
                                 f'namespace="{ns}",pod=~"redis-{v}-[0-9]+",cmd=~"hmget|hgetall|mget|get"}}[5m])))'
                                 f' / 1000 > {FEATURE_P99_MS:g}'),
                        "for": "10m",
                        "labels": {"severity": "page", "feature_view": v, "site": ctx.site},
                        "annotations": {"summary": f"feature view {v} on {ctx.site}: p99 lookup above {FEATURE_P99_MS:g} ms"},
                    } for v in sorted(views)]}]}})
    for v in sorted(streaming_views):
        fv = next(f for f in env.feature_views if f.name == v)
        ns = namespace_for(fv.privacy_tier)
        name = meta.k8s_name("flink", v)
        out.append({"apiVersion": MON, "kind": "PodMonitor",
                    "metadata": meta.metadata(name, ns, _lbl(ctx, "pod-monitor", name)),
                    "spec": {"selector": {"matchLabels": {**_match("flink", "stream-processor"),
                                                          meta.FEATURE_VIEW: v}},
                             "podMetricsEndpoints": [{"port": "metrics", "interval": "30s"}]}})
    for cname in sorted(collections):
        c = next(x for x in env.collections if x.name == cname)
        ns = namespace_for(c.privacy_tier)
        name = qdrant_name(cname)
        out.append({"apiVersion": MON, "kind": "PodMonitor",
                    "metadata": meta.metadata(name, ns, _lbl(ctx, "pod-monitor", name)),
                    "spec": {"selector": {"matchLabels": {**_match("qdrant", "vector-db"), meta.COLLECTION: cname}},
                             # Qdrant serves https only (workloads/render/qdrant.py): verify it with the fleet CA
                             "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "30s", "scheme": "https",
                                                      "tlsConfig": {"ca": {"secret": {"name": qdrant_tls_secret(c),
                                                                                      "key": "ca.crt"}},
                                                                    "serverName": service_fqdn(name, ns)},
                                                      "authorization": {"type": "Bearer", "credentials": {
                                                          "name": qdrant_secret(c), "key": "api-key"}}}]}})
    if has_gpus:
        out.append({"apiVersion": MON, "kind": "ServiceMonitor",
                    "metadata": meta.metadata("dcgm-exporter", ctx.monitoring_namespace,
                                              _lbl(ctx, "service-monitor", "dcgm-exporter")),
                    "spec": {"namespaceSelector": {"matchNames": [gpu_namespace]},
                             "selector": {"matchLabels": {"app": "nvidia-dcgm-exporter"}},
                             # honorLabels: keep the exporter's namespace/pod labels (the pod using each GPU), which the
                             # pipelines' GPU-utilisation rules select on; without it they become exported_*.
                             "endpoints": [{"port": "gpu-metrics", "path": "/metrics", "interval": "15s",
                                            "honorLabels": True}]}})
    out += dashboards.objects(ctx, env, plan_sites if plan_sites is not None else {ctx.site: dict(replicas)})
    return out
