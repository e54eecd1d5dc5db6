"""The gateway of one site: Gateway API + Envoy Gateway + Envoy AI Gateway objects (render/gateway.py),
the Secret with this site's vLLM API key, on entry sites the Secret with every tenant's API key
(render/edge_auth.py), and, on real clusters, the pinned Helm releases of the controllers (Envoy Gateway,
Envoy AI Gateway). Simulated/local clusters get only the CRDs."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from clusters.handle import ClusterHandle
from infra.spec import Environment
from workloads.images import Charts, HelmChart
from workloads.kube import ComponentError, child_options, create
from workloads.render import edge_auth, meta
from workloads.render import gateway as gw
from workloads.render.context import SiteContext, fleet_host, region_host


@dataclass
class GatewayArgs:
    env: Environment
    cluster: ClusterHandle
    context: SiteContext
    plan: gw.SiteGateway
    api_key: pulumi.Input[str] | None = None
    """This site's vLLM API key (workloads.secrets); required when LLM pipelines run here."""
    tenant_api_keys: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Every tenant's API key (tenant -> key, workloads.secrets); required for each tenant when users enter here."""
    secrets: gw.GatewaySecrets = field(default_factory=gw.GatewaySecrets)
    public_lb_annotations: dict = field(default_factory=dict)
    internal_lb_annotations: dict = field(default_factory=dict)
    charts: Charts = field(default_factory=Charts)
    install_controllers: bool = False


def envoy_gateway_values(ctx: SiteContext, charts: Charts) -> dict:
    """Envoy Gateway with the Backend API, the AI Gateway extension server and Redis-backed global rate limits."""
    return {"config": {"envoyGateway": {
        "gateway": {"controllerName": f"{gw.EG}/gatewayclass-controller"},
        # Gateway-namespace mode: the proxies run in the Gateways' namespace (hybridml-gateway), where the
        # NetworkPolicies admit them to the model servers; by default they would run in the controller's.
        "provider": {"type": "Kubernetes", "kubernetes": {"deploy": {"type": "GatewayNamespace"}}},
        "logging": {"level": {"default": "info"}},
        "extensionApis": {"enableBackend": True, "enableEnvoyPatchPolicy": True},
        "rateLimit": {"backend": {"type": "Redis", "redis": {"url": gw.ratelimit_url(ctx)}}},
        "extensionManager": {
            "hooks": {"xdsTranslator": {"translation": {"listener": {"includeAll": True}, "route": {"includeAll": True},
                                                        "cluster": {"includeAll": True}, "secret": {"includeAll": True}},
                                        "post": ["Translation", "Cluster", "Route"]}},
            "service": {"fqdn": {"hostname": f"ai-gateway-controller.{charts.ai_gateway.namespace}.svc.cluster.local",
                                 "port": 1063}}},
    }}}


class Gateway(pulumi.ComponentResource):
    hostnames: list[str]
    fleet_hostname: str

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:workloads:Gateway", name, None, opts)
        ctx, env, sg = args.context, args.env, args.plan
        deps: list[pulumi.Resource] = []
        if args.install_controllers:
            deps = self._controllers(name, args)
        has_llm = any(env.pipeline(p).is_llm for p in sg.local)
        if has_llm:
            if args.api_key is None:
                raise ComponentError(self, f"site {ctx.site} runs LLM pipelines but no vLLM API key was given")
            deps.append(create(f"{name}-vllm-api-key", {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": meta.metadata(gw.VLLM_API_KEY_SECRET, ctx.gateway_namespace,
                                          meta.labels("gateway", "credentials", instance=gw.VLLM_API_KEY_SECRET,
                                                      site=ctx.site)),
                "type": "Opaque", "stringData": {"apiKey": args.api_key}}, child_options(self, args.cluster, depends_on=deps)))
        if sg.listeners:
            missing = sorted({t.name for t in env.tenants} - set(args.tenant_api_keys))
            if missing:
                raise ComponentError(self, f"site {ctx.site} is an entry site but has no API key for tenant(s) "
                                           f"{', '.join(missing)}")
            # `{}` without tenants: the entry then refuses every request (401), as it must with nobody to admit
            deps.append(create(f"{name}-tenant-api-keys", edge_auth.api_key_secret(ctx, {
                t.name: args.tenant_api_keys[t.name] for t in env.tenants}), child_options(self, args.cluster, depends_on=deps)))
        self.objects = gw.site_objects(ctx, env, sg, args.secrets, args.public_lb_annotations,
                                       args.internal_lb_annotations)
        for m in self.objects:
            ns = m["metadata"].get("namespace", "cluster")
            create(f"{name}-{ns}-{m['metadata']['name']}-{m['kind'].lower()}", m,
                   child_options(self, args.cluster, depends_on=deps))
        self.hostnames = [region_host(r, ctx.domain, cls) for _, r, cls in sg.listeners]
        self.fleet_hostname = fleet_host(ctx.site, ctx.domain)
        self.register_outputs({"hostnames": self.hostnames, "fleet_hostname": self.fleet_hostname})

    def _controllers(self, name: str, args: GatewayArgs) -> list[pulumi.Resource]:
        charts = args.charts

        def release(role: str, chart: HelmChart, values: dict | None, after: list) -> pulumi.Resource:
            return k8s.helm.v3.Release(
                f"{name}-{role}",
                name=role, chart=f"{chart.repo}/{chart.chart}", version=chart.version, namespace=chart.namespace,
                create_namespace=True, atomic=True, cleanup_on_fail=True, timeout=600, values=values or {},
                opts=child_options(self, args.cluster, depends_on=after))

        eg = release("envoy-gateway", charts.envoy_gateway, envoy_gateway_values(args.context, charts), [])
        crds = release("ai-gateway-crds", charts.ai_gateway_crds, None, [])
        aig = release("ai-gateway", charts.ai_gateway, None, [eg, crds])
        return [eg, crds, aig]
