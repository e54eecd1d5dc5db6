"""Scrape configs (ServiceMonitor/PodMonitor) and alerts (PrometheusRule) of one site. Pure."""
from __future__ import annotations

from infra.labels import namespace_for
from infra.spec import Environment
from workloads.render import meta
from workloads.render.context import SiteContext
from workloads.render.data import qdrant_name
from workloads.render.qdrant import auth_secret_name as qdrant_secret
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


def latency_expr(engine: str, pipeline: str, namespace: str, site: str) -> str:
    """p99 server-side latency in seconds of one pipeline on one site, from the engine's own histogram.

    vLLM: `vllm:e2e_request_latency_seconds`; Triton via KServe serverless: Knative queue-proxy
    `revision_app_request_latencies` (ms); CPU services: OpenTelemetry `http.server.request.duration`.
    """
    if engine == "vllm":
        return (f'histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket{{'
                f'namespace="{namespace}",service=~"{pipeline}(-.+)?"}}[5m])))')
    if engine == "triton":
        return (f'histogram_quantile(0.99, sum by (le) (rate(revision_app_request_latencies_bucket{{'
                f'namespace_name="{namespace}",configuration_name=~"{pipeline}(-.+)?-predictor"}}[5m]))) / 1000')
    return (f'histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{{'
            f'namespace="{namespace}",service=~"{pipeline}(-.+)?"}}[5m])))')


def objects(ctx: SiteContext, env: Environment, pipelines: list[str], feature_views: list[str],
            collections: list[str], streaming_views: list[str], has_gpus: bool, gpu_namespace: str) -> list[dict]:
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
        rules = []
        for engine, names in sorted(engines.items()):
            for name in sorted(names):
                p = env.pipeline(name)
                rules.append({
                    "alert": "PipelineLatencyAboveSLO",
                    "expr": f"{latency_expr(engine, name, ns, ctx.site)} > {p.latency.service_ms / 1000:g}",
                    "for": "10m",
                    "labels": {"severity": "page", "pipeline": name, "site": ctx.site, "engine": engine},
                    "annotations": {
                        "summary": f"{name} on {ctx.site}: p99 service time above {p.latency.service_ms:g} ms",
                        "description": (f"The pipeline's p99 SLO is {p.latency.p99_ms:g} ms end to end, of which "
                                        f"{p.latency.service_ms:g} ms service time; the rest is the network budget "
                                        f"the placement used. Check queueing, replicas and GPU saturation.")},
                })
        out.append({"apiVersion": MON, "kind": "PrometheusRule",
                    "metadata": meta.metadata("pipeline-slos", ns, _lbl(ctx, "rules", "pipeline-slos")),
                    "spec": {"groups": [{"name": f"pipeline-latency-{ns}", "interval": "1m", "rules": rules}]}})

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
                             "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "30s",
                                                      "authorization": {"type": "Bearer", "credentials": {
                                                          "name": qdrant_secret(c), "key": "api-key"}}}]}})
    if has_gpus:
        out.append({"apiVersion": MON, "kind": "ServiceMonitor",
                    "metadata": meta.metadata("dcgm-exporter", ctx.monitoring_namespace,
                                              _lbl(ctx, "service-monitor", "dcgm-exporter")),
                    "spec": {"namespaceSelector": {"matchNames": [gpu_namespace]},
                             "selector": {"matchLabels": {"app": "nvidia-dcgm-exporter"}},
                             "endpoints": [{"port": "gpu-metrics", "path": "/metrics", "interval": "15s"}]}})
    return out
