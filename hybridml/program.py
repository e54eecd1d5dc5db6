"""The Pulumi program: one body for every stack (local, dev, prod, and per-site shards).

    spec --load--> Environment --solve--> PlacementPlan --plan per site--> cluster components
         --> ClusterHandles --> workloads.stack.deploy_workloads --> exports (per-site summary)
    (hybridml:bootstrapRacks) datacenter sites --> DatacenterBootstrap (Ansible, one resource per rack)
         --> the datacenter's ClusterHandle.ready: its workloads wait for its racks

Stack config: the keys and their parsing are hybridml/stack/config.py (ProgramSettings); the plan file
hybridml/stack/planfile.py.

`hybridml preview` runs this same `main()` under Pulumi's mocks (hybridml/ops/preview.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pulumi

from clusters.handle import ClusterHandle
from clusters.local_cluster import default_context
from clusters.sizing import batch_nodes_at, namespace_quotas, node_pools, subnet_plan, system_pool_plan
from hybridml.stack import fingerprint
from hybridml.stack.config import (
    CONFIG_NS,
    RACK_OVERRIDES,
    SITES,
    Mode,
    onprem_context_key,
    onprem_kubeconfig_key,
)
from hybridml.stack.planfile import load_plan
from hybridml.stack.settings import ProgramSettings
from infra.errors import SpecError, SpecIssue
from infra.spec import CloudSite, Datacenter, Environment
from policies.placement.plan import PlacementPlan

__all__ = ["CONFIG_NS", "Mode", "ProgramResult", "ProgramSettings", "load_plan", "main", "run", "select_sites",
           "site_summary"]


# --------------------------------------------------------------------------- pure decisions


def select_sites(env: Environment, plan: PlacementPlan, requested: tuple[str, ...] | None) -> list[str]:
    """The sites this stack builds, in spec order: the requested ones (a shard), else all the plan uses.

    A requested site the plan leaves empty is built anyway (its namespaces and quotas exist, ready
    for a later plan), so a shard's stack never depends on today's plan for whether it exists.
    """
    known = [s.name for s in env.sites]
    if requested is None:
        used = set(plan.used_sites())
        return [s for s in known if s in used]
    unknown = [s for s in requested if s not in known]
    if unknown:
        raise SpecError("stack config", [SpecIssue(
            (SITES,), f"no site {s!r} in environment {env.name!r} (sites: {', '.join(known)})")
            for s in unknown])
    return [s for s in known if s in set(requested)]


def site_summary(env: Environment, plan: PlacementPlan, site_name: str, mode: Mode) -> dict[str, Any]:
    """What runs where at one site, from the plan (the exported summary, minus cluster outputs)."""
    sp = plan.site(site_name)
    site = env.site(site_name)
    return {
        "kind": site.kind,
        "region": site.region if isinstance(site, CloudSite) else None,
        "simulated": mode == "local",
        "pipelines": dict(sorted(sp.pipelines.items())),
        "replicas": sum(sp.pipelines.values()),
        "data": sorted(sp.data),
        "gpus": dict(sorted(sp.gpus_used.items())),
        "nodes": dict(sorted(sp.nodes.items())),
        "cores": round(sp.cores_used, 2),
        "cost_usd_per_hour": round(sp.cost_usd_per_hour, 2),
    }


def rack_overrides_for(env: Environment, sites: list[str], settings: ProgramSettings) -> dict[str, str | None]:
    """The datacenters among `sites` whose racks this stack bootstraps, each with its overrides file (None: the
    spec's addresses as they are). Empty unless hybridml:bootstrapRacks. A rackOverrides entry must name a
    datacenter of the spec (any of them: a site stack reads the whole environment's config)."""
    if not settings.bootstrap_racks:
        return {}
    datacenters = [s.name for s in env.datacenters]
    unknown = [name for name in settings.rack_overrides if name not in datacenters]
    if unknown:
        raise SpecError("stack config", [SpecIssue(
            (RACK_OVERRIDES, name), f"no datacenter {name!r} in environment {env.name!r} "
                                    f"(datacenters: {', '.join(datacenters) or 'none'})") for name in unknown])
    return {name: settings.rack_overrides.get(name) for name in sites if name in datacenters}


# --------------------------------------------------------------------------- resources


@dataclass
class ProgramResult:
    env: Environment
    plan: PlacementPlan
    sites: list[str]
    clusters: dict[str, pulumi.ComponentResource]
    handles: dict[str, ClusterHandle]
    workloads: Any = None
    racks: dict[str, Any] = field(default_factory=dict)   # datacenter -> DatacenterBootstrap (hybridml:bootstrapRacks)
    # the fleet stack's providers of the clusters it reaches by stack reference (it builds no cluster)
    referenced_providers: dict[str, pulumi.ProviderResource] = field(default_factory=dict)


def build_clusters(env: Environment, plan: PlacementPlan, sites: list[str], settings: ProgramSettings,
                   secret: Callable[[str], pulumi.Output[str]], get: Callable[[str], str | None]
                   ) -> dict[str, pulumi.ComponentResource]:
    """One cluster component per selected site; the component's name is the site name."""
    from clusters.cloud_gpu_cluster import CloudGpuCluster, CloudGpuClusterArgs
    from clusters.dns import HostedZone
    from clusters.local_cluster import LocalCluster, LocalClusterArgs
    from clusters.model_access import s3_model_reads
    from clusters.onprem_cluster import OnPremCluster, OnPremClusterArgs
    from workloads.options import WorkloadOptions

    # the serving stack's domain (workloads publish `<region>.<domain>`, `<site>.fleet.<domain>`) and its Route53 zone
    zone = HostedZone(domain=WorkloadOptions().zone(env.name), zone_id=get("hostedZoneId") or None)

    out: dict[str, pulumi.ComponentResource] = {}
    for name in sites:
        site = env.site(name)
        sp = plan.site(name)
        quotas = namespace_quotas(env, plan, name)
        if settings.mode == "local":
            gpu_types = sorted(site.gpu_types) if isinstance(site, CloudSite) else \
                sorted({h.gpu.type for _, h in site.all_hosts() if h.gpu})
            out[name] = LocalCluster(name, LocalClusterArgs(
                site=site, quotas=quotas, gpu_types=gpu_types, kubeconfig_path=settings.local_kubeconfig,
                context=settings.local_contexts.get(name) or default_context(name)))
        elif isinstance(site, CloudSite):
            out[name] = CloudGpuCluster(name, CloudGpuClusterArgs(
                environment=env.name, site=site, subnets=subnet_plan(site), node_pools=node_pools(env, site, sp, batch_nodes_at(plan, name)),
                system_pool=system_pool_plan(env, site, sp), quotas=quotas, karpenter_chart_version=settings.karpenter_chart_version,
                gpu_operator_chart_version=settings.gpu_operator_chart_version, ami_alias=settings.ami_alias,
                dns_zone=zone, model_reads=s3_model_reads(env, sp.pipelines)))
        else:
            assert isinstance(site, Datacenter)
            out[name] = OnPremCluster(name, OnPremClusterArgs(
                site=site, kubeconfig=secret(onprem_kubeconfig_key(name, qualified=False)), quotas=quotas,
                context=get(onprem_context_key(name)),
                gpu_operator_chart_version=settings.gpu_operator_chart_version))
    return out


def build_rack_bootstraps(env: Environment, overrides: dict[str, str | None]) -> dict[str, Any]:
    """One DatacenterBootstrap per datacenter (`<dc>-racks`: a RackBootstrap per rack, rack after rack).
    Override paths are relative to the project directory, where the engine runs the program."""
    from datacenter.files import load_overrides
    from datacenter.inventory import build_inventory
    from datacenter.pulumi_racks import DatacenterBootstrap, DatacenterBootstrapArgs

    out = {}
    for name, path in overrides.items():
        if path is not None and not Path(path).is_file():
            raise SpecError("stack config", [SpecIssue((RACK_OVERRIDES, name), (
                f"the inventory overrides file {path} does not exist (from {Path.cwd()}); for the local test hosts "
                "`scripts/testhosts.py up --from-spec local` writes it, or set hybridml:bootstrapRacks false"))])
        inventory = build_inventory(env, name, load_overrides(path))
        out[name] = DatacenterBootstrap(f"{name}-racks", DatacenterBootstrapArgs(inventory=inventory))
    return out


def after_racks(handle: ClusterHandle, bootstrap: Any) -> ClusterHandle:
    """The handle whose `ready` also waits for the datacenter's racks. The last rack stands for all of
    them (each rack depends on the one before), so every workload object gains one dependency, not one per rack."""
    if bootstrap is None or not bootstrap.racks:
        return handle
    return replace(handle, ready=[*handle.ready, list(bootstrap.racks.values())[-1]])


def deploy_workloads(env: Environment, plan: PlacementPlan, handles: dict[str, ClusterHandle],
                     shard: bool) -> Any:
    """The serving stack on the clusters: the whole environment's, or a site shard's share of it."""
    from workloads.stack import deploy_workloads as deploy

    return deploy(env, plan, handles, parent=None, sites=sorted(handles) if shard else None)


def fleet_members(plan_digest: str, handles: dict[str, ClusterHandle], workloads: dict | None) -> dict[str, Any]:
    """What each site of this stack tells the fleet (exported as `fleet_members`, read by the fleet stack)."""
    from workloads.render import fleet

    sites = (workloads or {}).get("sites", {})
    return {name: fleet.member(name, h.kind, plan_digest, sites.get(name), kubeconfig=h.kubeconfig,
                               context=h.context)
            for name, h in handles.items()}


def build_fleet_directory(env: Environment, plan_digest: str, members: dict[str, Any],
                          providers: dict[str, pulumi.ProviderResource],
                          depends_on: dict[str, list[pulumi.Resource]] | None = None) -> Any:
    from workloads.fleet_directory import FleetDirectory, FleetDirectoryArgs

    return FleetDirectory(f"{env.name}-fleet-directory", FleetDirectoryArgs(
        environment=env.name, plan_digest=plan_digest, members=members, providers=providers,
        depends_on=depends_on or {}))


def run_fleet(settings: ProgramSettings, env: Environment, plan: PlacementPlan) -> ProgramResult:
    """The fleet stack of a sharded environment: every site stack's outputs by stack reference, the
    plan-consistency check, the fleet directory on every cluster."""
    from clusters.referenced_cluster import ReferencedCluster, ReferencedClusterArgs

    used = plan.used_sites()
    prefix = f"{pulumi.get_organization()}/{pulumi.get_project()}"
    members: dict[str, Any] = {}
    providers: dict[str, pulumi.ProviderResource] = {}
    refs: dict[str, str] = {}
    read: dict[str, Any] = {}
    for site in used:
        stack = settings.site_stacks.get(site) or f"{env.name}-{site}"
        refs[site] = stack
        ref = pulumi.StackReference(f"{prefix}/{stack}")
        read[stack] = ref.get_output("fleet_members")
        members[site] = read[stack].apply(lambda m, site=site: (m or {}).get(site))
        providers[site] = ReferencedCluster(f"{site}-referenced", ReferencedClusterArgs(site, members[site])).provider
    digest = plan.digest()
    directory = build_fleet_directory(env, digest, members, providers)
    pulumi.export("environment", env.name)
    pulumi.export("mode", settings.mode)
    pulumi.export("role", "fleet")
    pulumi.export("plan_digest", digest)
    pulumi.export("site_stacks", refs)
    pulumi.export("fleet", directory.content)
    pulumi.export(fingerprint.EXPORT, pulumi.Output.secret(pulumi.Output.all(**read).apply(stack_fingerprint)))
    return ProgramResult(env=env, plan=plan, sites=used, clusters={}, handles={}, workloads=None,
                         referenced_providers=providers)


def stack_fingerprint(references: dict[str, Any] | None = None) -> str:
    """The fingerprint of this run's inputs (hybridml/stack/fingerprint.py): every config value the engine passed,
    the program's source, spec, plan and SDK versions (and, for the fleet stack, the site stacks' outputs it
    read). Exported, so that a preview can skip a stack whose inputs have not changed since its last
    successful update."""
    from pulumi.runtime import config as runtime_config

    # the engine runs the program in the project directory: relative spec and plan paths are from there
    return fingerprint.inputs_fingerprint(dict(runtime_config.CONFIG.get()), Path.cwd(), references)


def run(settings: ProgramSettings, cfg: pulumi.Config | None = None) -> ProgramResult:
    """Load, solve, build, deploy, export. `cfg` supplies the secrets (on-prem kubeconfigs)."""
    from infra.loader import load_environment

    cfg = cfg or pulumi.Config(CONFIG_NS)
    env = load_environment(settings.spec)
    plan = load_plan(env, settings.plan_file)
    if settings.role == "fleet":
        return run_fleet(settings, env, plan)
    sites = select_sites(env, plan, settings.sites)
    shard = settings.sites is not None
    clusters = build_clusters(env, plan, sites, settings, secret=cfg.require_secret, get=cfg.get)
    racks = build_rack_bootstraps(env, rack_overrides_for(env, sites, settings))
    handles = {name: after_racks(c.handle, racks.get(name)) for name, c in clusters.items()}  # type: ignore[attr-defined]
    workloads = deploy_workloads(env, plan, handles, shard)
    digest = plan.digest()   # a hash of the whole plan: computed once per run
    members = fleet_members(digest, handles, workloads)
    if not shard:
        # The whole-environment stack publishes the directory itself; shards leave it to the fleet stack.
        build_fleet_directory(env, digest, members, {n: h.provider for n, h in handles.items() if n in plan.used_sites()},
                              {n: list(h.ready) for n, h in handles.items()})

    summary = {}
    for name in sites:
        row = site_summary(env, plan, name, settings.mode)
        h = handles[name]
        row["cluster"] = name
        row["endpoint"] = h.endpoint
        row["gpu_types"] = h.gpu_types
        summary[name] = row
    pulumi.export("environment", env.name)
    pulumi.export("mode", settings.mode)
    pulumi.export("role", "site" if shard else "environment")
    pulumi.export("plan_digest", digest)
    pulumi.export("sites", summary)
    pulumi.export("plan_cost_usd_per_hour", round(plan.cost_usd_per_hour, 2))
    pulumi.export("workloads", workloads)
    pulumi.export("fleet_members", members)
    if racks:
        pulumi.export("racks", {dc: {rack: {"resource": res.id, "changed_hosts": res.changed_hosts}
                                     for rack, res in bootstrap.racks.items()} for dc, bootstrap in racks.items()})
    pulumi.export(fingerprint.EXPORT, pulumi.Output.secret(stack_fingerprint()))
    return ProgramResult(env=env, plan=plan, sites=sites, clusters=clusters, handles=handles, workloads=workloads,
                         racks=racks)


def import_components() -> None:
    """Import what `run` imports lazily (cluster components, the serving stack) and read the source files the
    inputs fingerprint hashes: the offline preview does it before its clock starts, and before forking its
    workers, so a build measures the build."""
    import importlib

    import clusters.cloud_gpu_cluster  # noqa: E401, F401
    import clusters.local_cluster
    import clusters.onprem_cluster
    import clusters.referenced_cluster  # noqa: E401, F401
    import policies.placement  # noqa: F401

    fingerprint.program_inputs(Path.cwd(), {})   # reads and caches the source the fingerprint hashes
    # both SDKs load a module on first use of its attribute (pulumi_aws.ec2 alone is ~180 modules)
    for sdk, modules in (("pulumi_aws", ("cloudwatch", "ec2", "efs", "eks", "iam", "kms", "sqs", "vpc")),
                         ("pulumi_kubernetes", ("apiextensions", "core.v1", "helm.v3", "meta.v1", "scheduling.v1",
                                                "storage.v1"))):
        for module in modules:
            getattr(importlib.import_module(f"{sdk}.{module}"), "_utilities", None)   # a lazy module loads on use


def main() -> ProgramResult:
    """Entry point of `__main__.py` (and of `hybridml preview`, under mocks)."""
    return run(ProgramSettings.from_config())

