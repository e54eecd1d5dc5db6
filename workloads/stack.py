"""`deploy_workloads`: the serving stack of a placement plan, site by site.

For every site the plan uses (and that has a cluster): the gateway, one model-server component per
placed pipeline (vLLM, Triton/KServe, CPU), the feature views and collections placed there, their
monitoring and the NetworkPolicies of its namespaces. Decisions come from workloads.planning; the
components only create objects.
"""
from __future__ import annotations

import pulumi

from clusters.handle import ClusterHandle
from clusters.model_access import MODEL_CACHE_CLASS
from infra.errors import HybridmlError
from infra.labels import namespace_for
from infra.spec import Environment
from policies.placement.plan import PlacementPlan
from workloads import planning
from workloads.batch_job import BatchJob, BatchJobArgs
from workloads.cpu_service import CpuService, CpuServiceArgs
from workloads.feature_store import FeatureStore, FeatureStoreArgs
from workloads.fleet_pki import FleetPki, FleetPkiArgs
from workloads.gateway import Gateway, GatewayArgs
from workloads.model_delivery import ModelDelivery, ModelDeliveryArgs
from workloads.network_policies import NetworkPolicies, NetworkPoliciesArgs
from workloads.observability import Observability, ObservabilityArgs
from workloads.options import WorkloadOptions
from workloads.render import data as data_names
from workloads.render import edge_auth, network, triton, vllm
from workloads.render import gateway as gw
from workloads.render.context import SiteContext
from workloads.render.data import credential_purpose
from workloads.secrets import SecretSource
from workloads.triton_runtime import TritonRuntime, TritonRuntimeArgs
from workloads.triton_service import TritonService, TritonServiceArgs
from workloads.vector_db import VectorDb, VectorDbArgs
from workloads.vllm_service import VllmService, VllmServiceArgs

LOCAL_SEED = "hybridml-local-simulated-clusters-only"
PREVIEW_SEED = "hybridml-preview-placeholder"

SERVING_PORTS = {"vllm": {vllm.PORT}, "triton": {triton.HTTP_PORT}}   # KServe Standard mode: no queue-proxy
METRICS_PORTS = {"vllm": {vllm.PORT}, "triton": {triton.METRICS_PORT, 9091}}


class WorkloadsError(pulumi.RunError, HybridmlError):
    """The serving stack cannot be built from this plan and these clusters (message says why and the fix)."""


def _seed(options: WorkloadOptions, clusters: dict[str, ClusterHandle]):
    if options.secret_seed is not None:
        return options.secret_seed
    configured = pulumi.Config("hybridml").get_secret("secretSeed")
    if configured is not None:
        return configured
    if clusters and all(c.simulated for c in clusters.values()):
        return LOCAL_SEED
    if pulumi.runtime.is_dry_run():
        # preview / `hybridml check`: object shapes do not depend on the seed; `pulumi up` requires it.
        pulumi.log.warn("hybridml:secretSeed is not set: previewing with a placeholder; `pulumi up` will refuse")
        return PREVIEW_SEED
    raise WorkloadsError("no secret seed for the serving stack's credentials: run "
                         "`pulumi config set --secret hybridml:secretSeed \"$(openssl rand -base64 32)\"`")


def deploy_workloads(env: Environment, plan: PlacementPlan, clusters: dict[str, ClusterHandle],
                     parent: pulumi.Resource | None = None, options: WorkloadOptions | None = None,
                     sites: list[str] | None = None) -> dict:
    """Create the serving stack; return per site what runs there and its endpoints (plain data).

    `sites`: deploy only these sites' share (a site shard, issue 8). Everything that crosses sites
    (entry sites, region routes, token budgets, shadow mirrors, peer CIDRs and hostnames) is derived
    from the whole plan, never from other shards' resources, so every shard renders exactly the
    objects the whole-environment stack renders for its sites. Default: every site the plan uses.
    """
    options = options or WorkloadOptions()
    used = plan.used_sites()
    wanted = used if sites is None else [s for s in used if s in set(sites)]
    missing = [s for s in wanted if s not in clusters]
    if missing:
        raise WorkloadsError(f"the plan places work on {', '.join(missing)} but no cluster was given for "
                             f"{'it' if len(missing) == 1 else 'them'}: pass a ClusterHandle per used site")
    secrets = SecretSource(_seed(options, clusters))
    domain = options.zone(env.name)
    entries = planning.entry_sites(env, used)
    routes = planning.region_routes(env, plan, entries)
    budgets = planning.tenant_budgets(env, entries)
    mirrors = planning.shadow_mirrors(env, plan, entries)
    cidrs = planning.site_cidrs(env)
    plan_sites = {s: planning.site_work(plan, s).pipelines for s in used}
    base = pulumi.ResourceOptions(parent=parent)
    summary: dict = {"domain": domain, "entries": {r: dict(c) for r, c in entries.items()}, "sites": {}}

    for site in wanted:
        cluster = clusters[site]
        kind = planning.site_kind(env, site)
        ctx = SiteContext(env_name=env.name, site=site, site_kind=kind, domain=domain, images=options.images,
                          prometheus_url=options.prometheus_url, gateway_namespace=options.gateway_namespace,
                          monitoring_namespace=options.monitoring_namespace,
                          storage_class=options.storage_class.get(kind),
                          privacy_zones=planning.privacy_zones(env, site), cert_issuer=options.fleet_issuer,
                          object_store=planning.object_store(env, site))
        work = planning.site_work(plan, site)
        site_summary: dict = {"kind": kind, "simulated": cluster.simulated, "entry_for": [], "pipelines": {}, "batch": {},
                              "feature_views": {}, "collections": {}}
        flows: dict[str, network.NamespaceFlows] = {}

        def flow(ns: str, flows: dict = flows) -> network.NamespaceFlows:
            return flows.setdefault(ns, network.NamespaceFlows(ns))

        # ---- gateway
        sg = gw.plan_site_gateway(env, site, routes, entries, work.pipelines, mirrors, budgets)
        has_llm = any(env.pipeline(p).is_llm for p in work.pipelines)
        install = options.install_controllers if options.install_controllers is not None else not cluster.simulated
        gw_secrets = gw.GatewaySecrets(options.public_tls_secret, options.fleet_tls_secret, options.fleet_client_tls_secret,
                                       options.fleet_ca_configmap)
        gateway = Gateway(f"{site}-gateway", GatewayArgs(
            env=env, cluster=cluster, context=ctx, plan=sg,
            api_key=secrets.get(f"vllm-api-key/{site}") if has_llm else None,
            tenant_api_keys={t.name: secrets.get(edge_auth.api_key_purpose(t.name)) for t in env.tenants}
            if sg.listeners else {},
            secrets=gw_secrets,
            public_lb_annotations=options.public_lb_annotations(kind),
            internal_lb_annotations=options.internal_lb_annotations(kind),
            charts=options.charts, install_controllers=install), base)
        FleetPki(f"{site}-pki", FleetPkiArgs(
            cluster=cluster, context=ctx, environment=env.name, seed=secrets.get("fleet-ca"), public_hosts=gateway.hostnames,
            secrets=gw_secrets,
            charts=options.charts, install_cert_manager=install), base)
        site_summary["entry_for"] = [name for name, _, _ in sg.listeners]
        site_summary["hostnames"] = gateway.hostnames
        site_summary["fleet_hostname"] = gateway.fleet_hostname

        # ---- model servers: their identity and the shared vLLM model cache (EFS on the cloud clusters), then each server
        ModelDelivery(f"{site}-model-delivery", ModelDeliveryArgs(
            env=env, pipelines=dict(work.pipelines), cluster=cluster, context=ctx,
            cache_storage_class=MODEL_CACHE_CLASS if kind == "cloud" and not cluster.simulated else ctx.storage_class), base)
        runtimes: dict[str, TritonRuntime] = {}
        for name, replicas in work.pipelines.items():
            p = env.pipeline(name)
            ns = namespace_for(p.privacy_tier)
            f = flow(ns)
            reads = planning.data_reads(env, plan, name, site)
            for r in reads:
                if r.data_site != site:
                    f.remote_data_cidrs.update(cidrs[r.data_site])
            cname = f"{site}-{name}"
            comp: VllmService | TritonService | CpuService
            if p.engine.kind == "vllm":
                comp = VllmService(cname, VllmServiceArgs(
                    env=env, pipeline=p, replicas=replicas, cluster=cluster, context=ctx,
                    api_key_config=secrets.render(f"vllm-api-key/{site}", vllm.api_key_config)), base)
            elif p.engine.kind == "triton":
                if ns not in runtimes:
                    runtimes[ns] = TritonRuntime(f"{site}-{ns}-triton", TritonRuntimeArgs(ns, cluster, ctx), base)
                comp = TritonService(cname, TritonServiceArgs(env=env, pipeline=p, replicas=replicas, cluster=cluster,
                                                              context=ctx, runtime=runtimes[ns].runtime), base)
            else:
                creds = {f"{r.kind.replace('_', '-')}-{r.name}": secrets.get(credential_purpose(r.kind, r.name, r.data_site))
                         for r in reads}
                comp = CpuService(cname, CpuServiceArgs(env=env, pipeline=p, replicas=replicas, cluster=cluster,
                                                        context=ctx, reads=reads, credentials=creds), base)
                f.serving_ports.add(p.engine.port)
                f.metrics_ports.add(p.engine.port)
            f.serving_ports.update(SERVING_PORTS.get(p.engine.kind, set()))
            f.metrics_ports.update(METRICS_PORTS.get(p.engine.kind, set()))
            site_summary["pipelines"][name] = {
                "engine": p.engine.kind, "tier": p.privacy_tier.value, "namespace": ns, "replicas": replicas,
                "variants": planning.variant_replicas(p, replicas), "endpoints": comp.endpoints,
                "reads": {f"{r.kind}:{r.name}": r.data_site for r in reads},
            }

        # ---- data
        for view_name in work.feature_views:
            v = next(x for x in env.feature_views if x.name == view_name)
            ns = namespace_for(v.privacy_tier)
            readers = planning.data_readers(plan, "feature_view", v.name, site)
            sources = sorted({c for s in readers if s != site for c in cidrs[s]})
            f = flow(ns)
            f.has_data = True
            f.has_stream |= v.streaming
            f.metrics_ports.update({9121} | ({9249} if v.streaming else set()))
            if sources:   # the view's fleet load balancer and the policy admitting its readers' networks
                instance = data_names.redis_name(v.name)
                f.remote_readers[instance] = network.RemoteReaders(instance, data_names.REDIS_PORT, tuple(sources))
            f.reader_namespaces.update(namespace_for(env.pipeline(p).privacy_tier) for p in readers.get(site, ()))
            store = FeatureStore(f"{site}-fv-{v.name}", FeatureStoreArgs(
                view=v, cluster=cluster, context=ctx, fleet_sources=sources,
                password=secrets.get(credential_purpose("feature_view", v.name, site))), base)
            site_summary["feature_views"][v.name] = {"tier": v.privacy_tier.value, "namespace": ns,
                                                     "endpoint": store.endpoint, "streaming": v.streaming,
                                                     "read_from": sorted(readers)}
        for col_name in work.collections:
            c = next(x for x in env.collections if x.name == col_name)
            ns = namespace_for(c.privacy_tier)
            readers = planning.data_readers(plan, "collection", c.name, site)
            sources = sorted({x for s in readers if s != site for x in cidrs[s]})
            f = flow(ns)
            f.has_data = True
            f.metrics_ports.add(data_names.QDRANT_HTTP)
            if sources:
                instance = data_names.qdrant_name(c.name)
                f.remote_readers[instance] = network.RemoteReaders(instance, data_names.QDRANT_HTTP, tuple(sources))
            f.reader_namespaces.update(namespace_for(env.pipeline(p).privacy_tier) for p in readers.get(site, ()))
            db = VectorDb(f"{site}-col-{c.name}", VectorDbArgs(
                collection=c, cluster=cluster, context=ctx, fleet_sources=sources,
                api_key=secrets.get(credential_purpose("collection", c.name, site))), base)
            site_summary["collections"][c.name] = {"tier": c.privacy_tier.value, "namespace": ns,
                                                   "endpoint": db.endpoint, "read_from": sorted(readers)}

        # ---- batch pipelines on Ray: the plan's share of each here (the batch stage's placement)
        for placement, share in (plan.batch.at(site) if plan.batch else []):
            b = env.batch.pipeline(placement.name)
            ns = namespace_for(b.privacy_tier)
            flow(ns)   # the namespace's default-deny and DNS policies, should nothing else run there
            job = BatchJob(f"{site}-batch-{b.name}", BatchJobArgs(batch=b, placement=placement, cluster=cluster, context=ctx),
                           base)
            site_summary["batch"][b.name] = {"engine": b.engine.kind, "tier": b.privacy_tier, "namespace": ns,
                                             "kind": job.kind, "name": job.name, "workers": share.workers,
                                             "items": share.items, "schedule": b.schedule}

        # ---- monitoring and network policies
        Observability(f"{site}-observability", ObservabilityArgs(
            env=env, cluster=cluster, context=ctx, pipelines=list(work.pipelines), feature_views=work.feature_views,
            collections=work.collections, gpu_namespace=options.gpu_operator_namespace,
            replicas=dict(work.pipelines), plan_sites=plan_sites), base)
        NetworkPolicies(f"{site}-network-policies", NetworkPoliciesArgs(
            cluster=cluster, context=ctx, namespaces=[flows[n] for n in sorted(flows)], has_ratelimit=bool(sg.budgets),
            model_egress_cidrs=list(options.model_egress_cidrs),
            stream_egress_cidrs=list(options.stream_egress_cidrs)), base)
        summary["sites"][site] = site_summary
    summary["routes"] = [{"pipeline": r.pipeline, "region": r.region, "entry": r.entry,
                          "backends": [{"site": b.site, "weight": b.weight, "priority": b.priority} for b in r.backends]}
                         for r in routes]
    summary["token_budgets"] = [b.__dict__ for b in budgets]
    summary["shadows"] = [m.__dict__ for m in mirrors]
    summary["warnings"] = [f"shadow of LLM pipeline {name} not mirrored: Envoy AI Gateway routes have no "
                           f"request mirror; mirror in the client or use an HTTPRoute in front"
                           for name in planning.unmirrored_shadows(env)]
    for warning in summary["warnings"]:
        pulumi.log.warn(warning)
    return summary
