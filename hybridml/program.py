"""The Pulumi program: one body for every stack (local, dev, prod, and per-site shards).

    spec --load--> Environment --solve--> PlacementPlan --plan per site--> cluster components
         --> ClusterHandles --> workloads.stack.deploy_workloads --> exports (per-site summary)

Stack config (namespace `hybridml`, see Pulumi.<stack>.yaml):
    spec                     spec path or shipped name (required)
    mode                     cloud (EKS + on-prem clusters) | local (local control planes, kwok nodes)
    sites                    optional list: build only these sites and their share of the serving
                             stack (a site stack, issue 8); default every site the plan uses
    role                     optional `fleet`: the fleet stack of a sharded environment (hybridml/shards.py)
    siteStacks               fleet role: {site: site stack name} (default <env>-<site>)
    plan                     optional path to a plan JSON (`hybridml plan SPEC --json`): shards of one
                             environment then share one solved plan instead of each solving again
    localKubeconfig          local mode: kubeconfig path (default .local/kubeconfig)
    localContexts            local mode: {site: context} overrides (default hybridml-<site>)
    onpremKubeconfig-<dc>    cloud mode: SECRET kubeconfig of datacenter <dc>'s cluster
    onpremContext-<dc>       cloud mode: optional context within it
    karpenterChartVersion, gpuOperatorChartVersion, amiAlias: pinned defaults, overridable

`hybridml preview` runs this same `main()` under Pulumi's mocks (hybridml/preview.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import pulumi

from clusters.gpu_stack import GPU_OPERATOR_CHART_VERSION
from clusters.handle import ClusterHandle
from clusters.karpenter import AMI_ALIAS, KARPENTER_CHART_VERSION
from clusters.local_cluster import DEFAULT_KUBECONFIG, default_context
from clusters.sizing import namespace_quotas, node_pools, subnet_plan
from hybridml import fingerprint
from infra.errors import SpecError, SpecIssue
from infra.spec import CloudSite, Datacenter, Environment
from policies.placement.plan import PlacementPlan

CONFIG_NS = "hybridml"
Mode = Literal["local", "cloud"]


@dataclass(frozen=True)
class ProgramSettings:
    """Everything the program reads from stack config, parsed once (tests build it directly)."""

    spec: str
    mode: Mode = "cloud"
    sites: tuple[str, ...] | None = None
    role: Literal["environment", "fleet"] = "environment"
    site_stacks: dict[str, str] = field(default_factory=dict)
    plan_file: str | None = None
    local_kubeconfig: str = DEFAULT_KUBECONFIG
    local_contexts: dict[str, str] = field(default_factory=dict)
    karpenter_chart_version: str = KARPENTER_CHART_VERSION
    gpu_operator_chart_version: str = GPU_OPERATOR_CHART_VERSION
    ami_alias: str = AMI_ALIAS

    @classmethod
    def from_config(cls, cfg: pulumi.Config | None = None) -> "ProgramSettings":
        cfg = cfg or pulumi.Config(CONFIG_NS)
        mode = cfg.get("mode") or "cloud"
        if mode not in ("local", "cloud"):
            raise SpecError("stack config", [SpecIssue((f"{CONFIG_NS}:mode",), f"must be local or cloud (got {mode!r})")])
        sites = cfg.get_object("sites")
        if sites is not None and (not isinstance(sites, list) or not all(isinstance(s, str) for s in sites)):
            raise SpecError("stack config", [SpecIssue((f"{CONFIG_NS}:sites",),
                                                       f"must be a list of site names (got {sites!r})")])
        role = cfg.get("role") or "environment"
        if role not in ("environment", "fleet"):
            raise SpecError("stack config", [SpecIssue((f"{CONFIG_NS}:role",),
                                                       f"must be environment or fleet (got {role!r})")])
        site_stacks = cfg.get_object("siteStacks") or {}
        if not isinstance(site_stacks, dict):
            raise SpecError("stack config", [SpecIssue((f"{CONFIG_NS}:siteStacks",),
                                                       f"must map site names to stack names (got {site_stacks!r})")])
        return cls(
            spec=cfg.require("spec"), mode=mode,  # type: ignore[arg-type]
            sites=tuple(sites) if sites else None, role=role,  # type: ignore[arg-type]
            site_stacks={str(k): str(v) for k, v in site_stacks.items()},
            plan_file=cfg.get("plan"),
            local_kubeconfig=cfg.get("localKubeconfig") or DEFAULT_KUBECONFIG,
            local_contexts=dict(cfg.get_object("localContexts") or {}),
            karpenter_chart_version=cfg.get("karpenterChartVersion") or KARPENTER_CHART_VERSION,
            gpu_operator_chart_version=cfg.get("gpuOperatorChartVersion") or GPU_OPERATOR_CHART_VERSION,
            ami_alias=cfg.get("amiAlias") or AMI_ALIAS,
        )


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
            (f"{CONFIG_NS}:sites",), f"no site {s!r} in environment {env.name!r} (sites: {', '.join(known)})")
            for s in unknown])
    return [s for s in known if s in set(requested)]


def load_plan(env: Environment, plan_file: str | None) -> PlacementPlan:
    if plan_file is None:
        from policies.placement import solve

        # The same solver and gap as `hybridml plan`: the same spec gives the same plan.
        return solve(env)
    path = Path(plan_file)
    try:
        plan = PlacementPlan.model_validate_json(path.read_text())
    except (OSError, ValueError) as exc:
        raise SpecError(str(path), [SpecIssue((f"{CONFIG_NS}:plan",), f"cannot read plan: {exc}")]) from None
    if plan.environment != env.name:
        raise SpecError(str(path), [SpecIssue((f"{CONFIG_NS}:plan",), f"plan is for environment "
                                              f"{plan.environment!r}, the spec is {env.name!r}")])
    return plan


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


# --------------------------------------------------------------------------- resources


@dataclass
class ProgramResult:
    env: Environment
    plan: PlacementPlan
    sites: list[str]
    clusters: dict[str, pulumi.ComponentResource]
    handles: dict[str, ClusterHandle]
    workloads: Any = None
    # the fleet stack's providers of the clusters it reaches by stack reference (it builds no cluster)
    referenced_providers: dict[str, pulumi.ProviderResource] = field(default_factory=dict)


def build_clusters(env: Environment, plan: PlacementPlan, sites: list[str], settings: ProgramSettings,
                   secret: Callable[[str], pulumi.Output[str]], get: Callable[[str], str | None]
                   ) -> dict[str, pulumi.ComponentResource]:
    """One cluster component per selected site; the component's name is the site name."""
    from clusters.cloud_gpu_cluster import CloudGpuCluster, CloudGpuClusterArgs
    from clusters.local_cluster import LocalCluster, LocalClusterArgs
    from clusters.onprem_cluster import OnPremCluster, OnPremClusterArgs

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
                environment=env.name, site=site, subnets=subnet_plan(site), node_pools=node_pools(env, site, sp),
                quotas=quotas, karpenter_chart_version=settings.karpenter_chart_version,
                gpu_operator_chart_version=settings.gpu_operator_chart_version, ami_alias=settings.ami_alias))
        else:
            assert isinstance(site, Datacenter)
            out[name] = OnPremCluster(name, OnPremClusterArgs(
                site=site, kubeconfig=secret(f"onpremKubeconfig-{name}"), quotas=quotas,
                context=get(f"onpremContext-{name}"),
                gpu_operator_chart_version=settings.gpu_operator_chart_version))
    return out


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
    """The fingerprint of this run's inputs (hybridml/fingerprint.py): every config value the engine passed,
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
    handles = {name: c.handle for name, c in clusters.items()}  # type: ignore[attr-defined]
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
    pulumi.export(fingerprint.EXPORT, pulumi.Output.secret(stack_fingerprint()))
    return ProgramResult(env=env, plan=plan, sites=sites, clusters=clusters, handles=handles, workloads=workloads)


def import_components() -> None:
    """Import what `run` imports lazily (cluster components, the serving stack) and read the source files the
    inputs fingerprint hashes: the offline preview does it before its clock starts, and before forking its
    workers, so a build measures the build."""
    import clusters.cloud_gpu_cluster, clusters.local_cluster, clusters.onprem_cluster  # noqa: E401, F401
    import clusters.referenced_cluster, workloads.fleet_directory, workloads.stack  # noqa: E401, F401
    import policies.placement  # noqa: F401
    import importlib

    fingerprint.program_inputs(Path.cwd(), {})   # reads and caches the source the fingerprint hashes
    # both SDKs load a module on first use of its attribute (pulumi_aws.ec2 alone is ~180 modules)
    for sdk, modules in (("pulumi_aws", ("cloudwatch", "ec2", "eks", "iam", "kms", "sqs", "vpc")),
                         ("pulumi_kubernetes", ("apiextensions", "core.v1", "helm.v3", "meta.v1", "scheduling.v1",
                                                "storage.v1"))):
        for module in modules:
            getattr(importlib.import_module(f"{sdk}.{module}"), "_utilities", None)   # a lazy module loads on use


def main() -> ProgramResult:
    """Entry point of `__main__.py` (and of `hybridml preview`, under mocks)."""
    return run(ProgramSettings.from_config())

