"""NetworkPolicies: default deny in every namespace the serving stack runs pods in, then each flow
allowed explicitly (by pod role `app.kubernetes.io/component`, namespace and port). Pure.

Readers on other sites reach a data store through its internal load balancer; one policy per store
(`allow-remote-readers-<store>`) admits exactly the networks of the sites the plan says read that store, on its
serving port only (rule `data-path-narrow` checks both the policy and the load balancer's source ranges)."""
from __future__ import annotations

from dataclasses import dataclass, field

from infra.labels import namespace_for
from workloads.render import meta
from workloads.render.context import SiteContext
from workloads.render.data import (
    FEAST_PORT,
    FEAST_SERVER_PORT,
    QDRANT_GRPC,
    QDRANT_HTTP,
    QDRANT_P2P,
    REDIS_PORT,
    SENTINEL_PORT,
)
from workloads.render.gateway import PROXY_POD_LABELS

NS_LABEL = "kubernetes.io/metadata.name"
"""KServe serverless: requests reach Triton predictors through the Knative activator / local gateway."""
DATA_COMPONENTS = ["online-store", "vector-db", "feature-server"]
CLIENT_COMPONENTS = ["model-server", "feature-server", "stream-processor", "maintenance"]
PEER_COMPONENTS = ["online-store", "vector-db", "stream-processor"]
POD_IDENTITY_AGENT = "169.254.170.23/32"   # EKS Pod Identity agent (link-local, on every node)
ENVOY_PORTS = (10443, 8443, 9443)   # Envoy Gateway maps listener 443 to container port 10443
ENVOY_METRICS = 19001


@dataclass(frozen=True)
class RemoteReaders:
    """The networks of the other sites that read one data store here (its fleet load balancer's source ranges)."""

    instance: str                  # app.kubernetes.io/instance of the store's pods
    port: int                      # the one port the load balancer exposes
    cidrs: tuple[str, ...]


@dataclass
class NamespaceFlows:
    """What runs in one serving namespace of a site, as far as the network is concerned."""

    namespace: str
    serving_ports: set[int] = field(default_factory=set)
    metrics_ports: set[int] = field(default_factory=set)
    has_data: bool = False
    has_stream: bool = False
    reader_namespaces: set[str] = field(default_factory=set)   # same-site namespaces whose pods read data here
    remote_readers: dict[str, RemoteReaders] = field(default_factory=dict)   # data store instance -> other sites' readers
    remote_data_cidrs: set[str] = field(default_factory=set)   # other sites this namespace's pipelines read from


def _np(ctx: SiteContext, name: str, ns: str, spec: dict) -> dict:
    lbls = meta.labels("network-policy", "network-policy", instance=name, site=ctx.site)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta.metadata(name, ns, lbls),
            "spec": spec}


def _ports(ports, proto: str = "TCP") -> list[dict]:
    return [{"protocol": proto, "port": p} for p in sorted(ports)]


def _ns(*names: str) -> dict:
    return {"namespaceSelector": {"matchExpressions": [{"key": NS_LABEL, "operator": "In", "values": sorted(names)}]}}


def _components(values: list[str]) -> dict:
    return {"matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": sorted(values)}]}


def common(ctx: SiteContext, ns: str) -> list[dict]:
    return [
        _np(ctx, "default-deny", ns, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        _np(ctx, "allow-dns", ns, {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": {"matchLabels": {NS_LABEL: "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": _ports([53], "UDP") + _ports([53])}]}),
    ]


def serving_namespace(ctx: SiteContext, f: NamespaceFlows, all_serving: list[str], model_egress: list[str],
                      stream_egress: list[str]) -> list[dict]:
    ns = f.namespace
    out = common(ctx, ns)
    if f.serving_ports:
        out.append(_np(ctx, "allow-gateway-to-model-servers", ns, {
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "model-server"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [_ns(ctx.gateway_namespace)], "ports": _ports(f.serving_ports)}]}))
        out.append(_np(ctx, "allow-model-download", ns, {
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "model-server"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": c}} for c in model_egress], "ports": _ports([443])}]
            # EKS Pod Identity: the node-local agent hands the model-server role's S3 credentials out on port 80
            + ([{"to": [{"ipBlock": {"cidr": POD_IDENTITY_AGENT}}], "ports": _ports([80])}] if ctx.site_kind == "cloud" else [])}))
    if f.metrics_ports:
        out.append(_np(ctx, "allow-metrics-scrape", ns, {
            "podSelector": {}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [_ns(ctx.monitoring_namespace)], "ports": _ports(f.metrics_ports)}]}))
    data_ports = [REDIS_PORT, SENTINEL_PORT, QDRANT_HTTP, QDRANT_GRPC, FEAST_PORT, FEAST_SERVER_PORT]
    if f.has_data:
        sources: list[dict] = [{**_ns(*(f.reader_namespaces | {ns})), "podSelector": _components(CLIENT_COMPONENTS)}]
        out.append(_np(ctx, "allow-data-clients", ns, {
            "podSelector": _components(DATA_COMPONENTS), "policyTypes": ["Ingress"],
            "ingress": [{"from": sources, "ports": _ports(data_ports)}]}))
        # Redis replication and the Sentinels' gossip and failover commands; Qdrant P2P; Flink's RPC and blob ports.
        peer_ports = [REDIS_PORT, SENTINEL_PORT, QDRANT_HTTP, QDRANT_P2P, 6122, 6123, 6124, 8081]
        for r in sorted(f.remote_readers.values(), key=lambda r: r.instance):
            out.append(_np(ctx, meta.k8s_name("allow-remote-readers", r.instance), ns, {
                "podSelector": {"matchLabels": {"app.kubernetes.io/instance": r.instance}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"ipBlock": {"cidr": c}} for c in sorted(r.cidrs)], "ports": _ports([r.port])}]}))
        out.append(_np(ctx, "allow-data-peers", ns, {
            "podSelector": _components(PEER_COMPONENTS), "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": _components(PEER_COMPONENTS)}],
                         "ports": _ports(peer_ports)}],
            "egress": [{"to": [{"podSelector": _components(PEER_COMPONENTS)}],
                        "ports": _ports(peer_ports)}]}))
    dests: list[dict] = [{**_ns(*all_serving), "podSelector": _components(DATA_COMPONENTS)}]
    dests += [{"ipBlock": {"cidr": c}} for c in sorted(f.remote_data_cidrs)]
    out.append(_np(ctx, "allow-data-access", ns, {
        "podSelector": _components(CLIENT_COMPONENTS), "policyTypes": ["Egress"],
        "egress": [{"to": dests, "ports": _ports(data_ports)}]}))
    if f.has_stream:
        state_ports = {443, 6443} | ({ctx.object_store.port} if ctx.object_store else set())
        out.append(_np(ctx, "allow-stream-ingest", ns, {
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "stream-processor"}},
            "policyTypes": ["Egress"],
            "egress": [
                # Flink native mode: the JobManager manages its TaskManager pods through the API server;
                # checkpoints go to object storage (HTTPS; a datacenter's own store on its port).
                {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": _ports(state_ports)},
                {"to": [{"ipBlock": {"cidr": c}} for c in stream_egress], "ports": _ports([9092, 9093])}]}))
    return out


def gateway_namespace(ctx: SiteContext, serving: list[str], has_ratelimit: bool) -> list[dict]:
    ns = ctx.gateway_namespace
    proxy = {"matchLabels": dict(PROXY_POD_LABELS)}   # what Envoy Gateway labels its proxy pods with
    out = common(ctx, ns)
    out.append(_np(ctx, "allow-clients-to-proxies", ns, {
        "podSelector": proxy, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": _ports(ENVOY_PORTS)},
                    {"from": [_ns(ctx.monitoring_namespace)], "ports": _ports([ENVOY_METRICS])}]}))
    out.append(_np(ctx, "allow-proxies-to-backends", ns, {
        "podSelector": proxy, "policyTypes": ["Egress"],
        "egress": ([{"to": [_ns(*serving)]}] if serving else []) + [
            # Other sites' fleet gateways (internal load balancers on the WAN).
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": _ports([8443, 9443])},
            # xDS from Envoy Gateway, global rate limit service, AI Gateway external processor.
            {"to": [_ns("envoy-gateway-system", "envoy-ai-gateway-system")]},
        ]}))
    if has_ratelimit:
        out.append(_np(ctx, "allow-ratelimit-redis", ns, {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis",
                                            "app.kubernetes.io/component": "rate-limit-store"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [_ns("envoy-gateway-system")], "ports": _ports([6379])}]}))
    return out


def tier_namespaces(tiers: list[str]) -> list[str]:
    return [namespace_for(t) for t in tiers]
