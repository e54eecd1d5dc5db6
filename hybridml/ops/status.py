"""Fleet status: the live clusters (hybridml.observe) compared with the placement plan. Pure: no I/O.

`build_report(env, plan, fleet)` answers, per site and per pipeline:

- desired replicas (the plan) vs ready replicas (Running+Ready pods labelled `hybridml.io/pipeline`; a
  multi-node vLLM replica (LeaderWorkerSet) counts once, by its leader pod; KServe predictor pods count
  through their InferenceService's labels when they do not carry the pipeline label themselves);
- GPUs (per GPU type) and cores requested by active pods vs the nodes' allocatable capacity, next to what
  the plan counted;
- pods of a pipeline running on a site the plan did not put it ("misplaced");
- privacy-zone violations: a pod whose privacy tier (`hybridml.io/privacy-tier`, else its `ml-<tier>`
  namespace) is more sensitive than its node's `hybridml.io/privacy-zone` allows
  (`infra.labels.zones_allowed_for`), or a pii/restricted pod outside an own datacenter on a site whose
  spec does not allow that tier;
- latency headroom: SLO p99 minus the worst RTT + service time the plan routes each region to; and the
  same after failover when a routed site is unreachable or has no ready replica ("live").

Severities: `error` makes the report not ok (`hybridml status` exits 1); `warning` and `info` are shown
but do not. An InferenceService/LeaderWorkerSet that no controller has reconciled on a *simulated*
cluster (the local and sim stacks run the real KServe controller but no LWS controller: a LeaderWorkerSet's pods are
never created there) is
`info` and its pipeline is "declared"; on a real cluster it is an error.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from hybridml.ops.batch_status import BatchStatus, batch_report
from hybridml.ops.observe import ClusterObservation, FleetObservation, PodObs
from infra import labels as L
from infra.spec import Datacenter, Environment, PrivacyTier
from policies.placement.plan import PlacementPlan

ERROR, WARNING, INFO = "error", "warning", "info"
EXAMPLES = 3                                           # pod names quoted per aggregated finding
_PRODUCT_TO_TYPE = {v: k for k, v in L.GPU_PRODUCTS.items()}

# Per-site pipeline states, from best to worst (a pipeline's state is the worst over its sites).
STATES = ("ok", "declared", "degraded", "missing", "unreachable")


@dataclass
class Finding:
    severity: str           # error | warning | info
    kind: str               # unreachable | unready | missing | unobserved | misplaced | privacy | latency | capacity
    site: str | None
    pipeline: str | None
    message: str


@dataclass
class PipelineSite:
    site: str
    desired: int
    ready: int
    pods: int               # active pods of the pipeline at the site (workers of multi-node replicas included)
    state: str              # ok | declared | degraded | missing | unreachable | misplaced


@dataclass
class PipelineStatus:
    name: str
    engine: str
    privacy_tier: str
    desired: int
    ready: int
    state: str
    slo_p99_ms: float
    worst_latency_ms: float | None        # the plan's routing: worst RTT + service time over routed sites
    headroom_ms: float | None             # slo - worst (plan)
    live_headroom_ms: float | None        # after failing over routed sites that are down; None: unserved
    sites: dict[str, PipelineSite] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state in ("ok", "declared") and (self.headroom_ms is None or self.headroom_ms >= 0) and \
            (self.live_headroom_ms is None or self.live_headroom_ms >= 0) and \
            not any(s.state == "misplaced" for s in self.sites.values())


@dataclass
class SiteStatus:
    name: str
    kind: str
    context: str
    reachable: bool
    error: str
    planned: bool                         # the plan puts pipelines or data here
    simulated: bool                       # every node is a kwok node (hybridml.io/simulated=true)
    pipelines_planned: int
    pipelines_ready: int
    pipelines_declared: int
    desired: int
    ready: int
    pods: int                             # active pods (not finished, not terminating)
    pods_running: int
    pods_pending: int
    nodes: int
    nodes_ready: int
    gpus_used: dict[str, int]             # GPU type -> GPUs requested by active scheduled pods
    gpus_capacity: dict[str, int]         # GPU type -> allocatable GPUs of the nodes
    gpus_planned: dict[str, int]
    cores_used: float
    cores_capacity: float
    cores_planned: float
    fetch_seconds: float


@dataclass
class StatusReport:
    environment: str
    plan_source: str
    sites: list[SiteStatus]
    pipelines: list[PipelineStatus]
    findings: list[Finding]
    fetch_seconds: float = 0.0
    simulated: bool = False               # some observed nodes are kwok-simulated
    batch: list[BatchStatus] = field(default_factory=list)   # batch pipelines (hybridml/ops/batch_status.py)

    @property
    def ok(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        for p, row in zip(self.pipelines, data["pipelines"], strict=False):
            row["ok"] = p.ok
        for b, row in zip(self.batch, data["batch"], strict=False):
            row["ok"] = b.ok
        data["summary"] = {
            "sites": len(self.sites), "sites_unreachable": sum(1 for s in self.sites if not s.reachable),
            "pipelines": len(self.pipelines), "pipelines_ok": sum(1 for p in self.pipelines if p.ok),
            "desired": sum(p.desired for p in self.pipelines), "ready": sum(p.ready for p in self.pipelines),
            "errors": len(self.errors), "warnings": sum(1 for f in self.findings if f.severity == WARNING),
            "batch": len(self.batch), "batch_ok": sum(1 for b in self.batch if b.ok),
        }
        return data


# --------------------------------------------------------------------------- helpers


def gpu_type(product: str | None) -> str:
    """The spec's GPU type of a node's `nvidia.com/gpu.product` label (inverse of infra.labels.gpu_product)."""
    if not product:
        return "GPU"
    return _PRODUCT_TO_TYPE.get(product, product.removeprefix("NVIDIA-"))


def pod_tier(pod: PodObs) -> PrivacyTier | None:
    """The privacy tier of a pod's data: its label, else its serving namespace `ml-<tier>`; None if neither."""
    value = pod.labels.get(L.PRIVACY_TIER) or (pod.namespace[3:] if pod.namespace.startswith("ml-") else None)
    try:
        return PrivacyTier(value) if value else None
    except ValueError:
        return None


def _names(pods: list[PodObs]) -> str:
    shown = ", ".join(f"{p.namespace}/{p.name}" for p in pods[:EXAMPLES])
    return shown + (f" (+{len(pods) - EXAMPLES} more)" if len(pods) > EXAMPLES else "")


def _pipeline_of(pod: PodObs, isvc_pipeline: dict[tuple[str, str], str]) -> str | None:
    name = pod.labels.get(L.PIPELINE)
    if name:
        return name
    isvc = pod.labels.get(L.KSERVE_ISVC)
    return isvc_pipeline.get((pod.namespace, isvc)) if isvc else None


def _is_replica(pod: PodObs) -> bool:
    """A pod that stands for one replica: every pod except the workers of a multi-node (LWS) replica."""
    return pod.labels.get(L.LWS_ROLE) != "worker"


# --------------------------------------------------------------------------- the report


def build_report(env: Environment, plan: PlacementPlan, fleet: FleetObservation, *, plan_source: str = "solved",
                 pipelines: set[str] | None = None) -> StatusReport:
    """Compare the observed clusters with the plan. `pipelines` limits the per-pipeline rows and findings."""
    findings: list[Finding] = []
    used = set(plan.used_sites())
    planned = {p.name: p for p in plan.pipelines}
    site_plans = {s.name: s for s in plan.sites}
    known = {p.name for p in env.pipelines}

    # (site, pipeline) -> ready replicas / active pods; workloads declared per (site, pipeline)
    ready: dict[tuple[str, str], int] = defaultdict(int)
    active: dict[tuple[str, str], int] = defaultdict(int)
    declared: dict[tuple[str, str], list] = defaultdict(list)
    sites: list[SiteStatus] = []
    simulated_any = False

    for site in env.sites:
        obs = fleet.clusters.get(site.name) or ClusterObservation(
            site=site.name, context="", reachable=False, error="not observed")
        sp = site_plans.get(site.name)
        is_planned = site.name in used
        if not obs.reachable:
            findings.append(Finding(ERROR if is_planned else WARNING, "unreachable", site.name, None,
                                    f"cluster {obs.context or '?'} unreachable: {obs.error}"
                                    + ("" if is_planned else " (the plan puts nothing here)")))
        nodes = {n.name: n for n in obs.nodes}
        simulated = bool(obs.nodes) and all(n.simulated for n in obs.nodes)
        simulated_any |= any(n.simulated for n in obs.nodes)

        isvc_pipeline = {(w.namespace, w.name): w.labels[L.PIPELINE] for w in obs.workloads
                         if w.kind == "InferenceService" and L.PIPELINE in w.labels}
        for w in obs.workloads:
            if L.PIPELINE in w.labels:
                declared[(site.name, w.labels[L.PIPELINE])].append(w)

        # capacity and pods
        gpus_used: dict[str, int] = defaultdict(int)
        gpus_cap: dict[str, int] = defaultdict(int)
        for n in obs.nodes:
            if n.gpus:
                gpus_cap[gpu_type(n.labels.get(L.GPU_PRODUCT))] += n.gpus
        cores_used = 0.0
        pending: list[PodObs] = []
        misplaced: dict[tuple[str, str], list[PodObs]] = defaultdict(list)
        privacy: dict[tuple[str, str], list[PodObs]] = defaultdict(list)
        rack_zones = {r.privacy_zone.value for r in site.racks} if isinstance(site, Datacenter) else set()
        pods_active = pods_running = 0
        for pod in obs.pods:
            if not pod.active:
                continue
            pods_active += 1
            pods_running += pod.phase == "Running"
            node = nodes.get(pod.node) if pod.node else None
            if pod.node is None:
                pending.append(pod)
            else:
                cores_used += pod.cpu
                if pod.gpus:
                    gpus_used[gpu_type(node.labels.get(L.GPU_PRODUCT) if node else None)] += pod.gpus
            name = _pipeline_of(pod, isvc_pipeline)
            if name:
                key = (site.name, name)
                active[key] += 1
                if pod.ready and pod.phase == "Running" and _is_replica(pod):
                    ready[key] += 1
                if name not in known:
                    misplaced[(name, "is not a pipeline of the spec")].append(pod)
                elif planned.get(name) is None or planned[name].replicas.get(site.name, 0) == 0:
                    misplaced[(name, "the plan puts no replica here")].append(pod)
                elif pod.labels.get(L.SITE, site.name) != site.name:
                    misplaced[(name, f"labelled for site {pod.labels[L.SITE]}")].append(pod)
            tier = pod_tier(pod)
            if tier is not None and node is not None:
                zone = node.labels.get(L.PRIVACY_ZONE)
                # the placement's rule: at a datacenter each tier runs in its home zone (the zone whose
                # capacity the plan counted for it), elsewhere in any zone that may hold the tier
                home = L.home_zone(tier, rack_zones) if rack_zones else None
                allowed = [home] if home else L.zones_allowed_for(tier)
                if zone not in allowed and not (zone is None and tier == PrivacyTier.public):
                    rule = f"home zone {home}" if home else f"allowed: {', '.join(allowed)}"
                    privacy[(tier.value, f"node privacy zone {zone or '(none)'} ({rule})")].append(pod)
                elif tier.is_sensitive and node.labels.get(L.SITE_KIND) != "datacenter" and \
                        not env.site_allows(site, tier):
                    privacy[(tier.value, f"node {node.name} is not in an own datacenter and site {site.name} "
                                         f"does not allow {tier.value}")].append(pod)
        for (name, why), pods in sorted(misplaced.items()):
            if pipelines is None or name in pipelines:
                findings.append(Finding(ERROR, "misplaced", site.name, name,
                                        f"{len(pods)} pod(s) of {name} on {site.name}: {why}: {_names(pods)}"))
        for (tier_name, why), pods in sorted(privacy.items()):
            findings.append(Finding(ERROR, "privacy", site.name, pods[0].labels.get(L.PIPELINE),
                                    f"{len(pods)} {tier_name} pod(s) on {why}: {_names(pods)}"))
        if pending:
            by: defaultdict[str, int] = defaultdict(int)
            for pend in pending:
                by[_pipeline_of(pend, isvc_pipeline) or pend.namespace] += 1
            findings.append(Finding(ERROR, "capacity", site.name, None,
                                    f"{len(pending)} pod(s) not scheduled: "
                                    + ", ".join(f"{k} ({v})" for k, v in sorted(by.items()))))
        not_ready = [n.name for n in obs.nodes if not n.ready]
        if not_ready:
            findings.append(Finding(WARNING, "capacity", site.name, None,
                                    f"{len(not_ready)} node(s) not Ready: {', '.join(not_ready[:EXAMPLES])}"))
        sites.append(SiteStatus(
            name=site.name, kind="datacenter" if isinstance(site, Datacenter) else "cloud", context=obs.context,
            reachable=obs.reachable, error=obs.error, planned=is_planned, simulated=simulated,
            pipelines_planned=len(sp.pipelines) if sp else 0, pipelines_ready=0, pipelines_declared=0,
            desired=sum(sp.pipelines.values()) if sp else 0, ready=0, pods=pods_active, pods_running=pods_running,
            pods_pending=len(pending), nodes=len(obs.nodes), nodes_ready=len(obs.nodes) - len(not_ready),
            gpus_used=dict(sorted(gpus_used.items())), gpus_capacity=dict(sorted(gpus_cap.items())),
            gpus_planned=_planned_gpus(env, plan, site.name),
            cores_used=round(cores_used, 3), cores_capacity=round(sum(n.cpu for n in obs.nodes), 3),
            cores_planned=round((sp.cores_used if sp else 0.0) + _batch_cores(env, plan, site.name), 3),
            fetch_seconds=round(obs.fetch_seconds, 3)))

    by_site = {s.name: s for s in sites}
    rows: list[PipelineStatus] = []
    for pp in plan.pipelines:
        p = env.pipeline(pp.name) if pp.name in known else None
        rows_sites: dict[str, PipelineSite] = {}
        for site_name, want in sorted(pp.replicas.items()):
            if want <= 0:
                continue
            key = (site_name, pp.name)
            s = by_site.get(site_name)
            got = ready.get(key, 0)
            works = declared.get(key, [])
            if s is None or not s.reachable:
                state = "unreachable"
            elif got >= want:
                state = "ok"
            elif not works and not active.get(key):
                state = "missing"
            elif works and all(not w.reconciled and w.kind in ("InferenceService", "LeaderWorkerSet") for w in works):
                state = "declared"
            else:
                state = "degraded"
            rows_sites[site_name] = PipelineSite(site_name, want, got, active.get(key, 0), state)
            if s is not None:
                s.ready += min(got, want) if state != "unreachable" else 0
                s.pipelines_ready += state == "ok"
                s.pipelines_declared += state == "declared"
            if pipelines is not None and pp.name not in pipelines:
                continue
            kinds = ", ".join(sorted({f"{w.kind} {w.namespace}/{w.name}" for w in works})) or "-"
            if state == "missing":
                findings.append(Finding(ERROR, "missing", site_name, pp.name,
                                        f"{pp.name}: the plan puts {want} replica(s) on {site_name}; "
                                        f"no workload or pod of it is there"))
            elif state == "degraded":
                zero = bool(p and p.autoscaling.scale_to_zero)
                findings.append(Finding(WARNING if zero else ERROR, "unready", site_name, pp.name,
                                        f"{pp.name}: {got}/{want} replicas ready on {site_name} ({kinds})"
                                        + (" (scale to zero allowed)" if zero else "")))
            elif state == "declared":
                sev = INFO if s is not None and s.simulated else ERROR
                findings.append(Finding(sev, "unobserved", site_name, pp.name,
                                        f"{pp.name}: {kinds} declared but no controller has reconciled it "
                                        + ("(simulated cluster: no controller of this kind runs here, no pods)"
                                           if sev == INFO else "(is its controller installed?)")))
        # also pods of the pipeline on sites the plan does not use for it (misplaced rows)
        for (site_name, name), n_active in sorted(active.items()):
            if name == pp.name and site_name not in rows_sites:
                rows_sites[site_name] = PipelineSite(site_name, 0, ready.get((site_name, name), 0), n_active, "misplaced")
        worst, headroom, live = _headroom(env, pp, rows_sites)
        state = max((r.state for r in rows_sites.values() if r.state in STATES), key=STATES.index, default="ok")
        row = PipelineStatus(name=pp.name, engine=pp.engine, privacy_tier=pp.privacy_tier,
                             desired=pp.total_replicas,
                             ready=sum(min(r.ready, r.desired) for r in rows_sites.values()),
                             state=state, slo_p99_ms=pp.slo_p99_ms, worst_latency_ms=worst, headroom_ms=headroom,
                             live_headroom_ms=live, sites=rows_sites)
        if pipelines is not None and pp.name not in pipelines:
            continue
        if headroom is not None and headroom < 0:
            findings.append(Finding(ERROR, "latency", None, pp.name,
                                    f"{pp.name}: plan routes a region at {worst:.0f} ms, over the "
                                    f"{pp.slo_p99_ms:.0f} ms p99 SLO by {-headroom:.0f} ms"))
        elif live is not None and live < 0:
            findings.append(Finding(ERROR, "latency", None, pp.name,
                                    f"{pp.name}: with the down sites failed over, the worst region is "
                                    f"{-live:.0f} ms over the {pp.slo_p99_ms:.0f} ms p99 SLO"))
        rows.append(row)
    # pods of pipelines the plan does not know are reported as misplaced findings above
    batch = batch_report(env, plan, fleet, lambda *args: findings.append(Finding(*args)), ERROR, WARNING, INFO)
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    findings.sort(key=lambda f: (order[f.severity], f.kind, f.site or "", f.pipeline or ""))
    return StatusReport(environment=env.name, plan_source=plan_source, sites=sites, pipelines=rows,
                        findings=findings, fetch_seconds=round(fleet.fetch_seconds, 3), simulated=simulated_any,
                        batch=batch)


def _planned_gpus(env: Environment, plan: PlacementPlan, site: str) -> dict[str, int]:
    """GPUs per type the plan holds at a site: the online replicas', and the batch workers' while a run goes."""
    sp = next((s for s in plan.sites if s.name == site), None)
    out = dict(sp.gpus_used) if sp else {}
    for bp, share in (plan.batch.at(site) if plan.batch else []):
        gpu = env.batch.pipeline(bp.name).resources.gpu if bp.name in {b.name for b in env.batch.pipelines} else None
        if gpu is not None:
            out[gpu.type] = out.get(gpu.type, 0) + gpu.count * share.workers
    return dict(sorted(out.items()))


def _batch_cores(env: Environment, plan: PlacementPlan, site: str) -> float:
    known = {b.name: b for b in env.batch.pipelines}
    return sum(known[bp.name].resources.cpu * share.workers + known[bp.name].head.cpu
               for bp, share in (plan.batch.at(site) if plan.batch else []) if bp.name in known)


def _latency(env: Environment, pp, region: str, site: str) -> float | None:
    got = pp.latency_ms.get(region, {}).get(site)
    if got is not None:
        return got
    try:
        return env.user_rtt(region, site) + env.pipeline(pp.name).latency.service_ms
    except KeyError:
        return None


def _headroom(env: Environment, pp, rows: dict[str, PipelineSite]) -> tuple[float | None, float | None, float | None]:
    """(worst routed latency, plan headroom, live headroom) of one pipeline, in ms.

    Live: a routed site that is unreachable or has no ready replica (and is not merely unobservable)
    sends its share to the first serving site in the region's failover order; None when a region with
    demand has no serving site left.
    """
    worst = None
    live_worst = 0.0
    unserved = False
    serving = {s for s, r in rows.items() if r.state in ("ok", "declared") or (r.state == "degraded" and r.ready > 0)}
    for region, shares in pp.routing.items():
        targets = [s for s, x in shares.items() if x > 0]
        for s in targets:
            lat = _latency(env, pp, region, s)
            if lat is not None:
                worst = lat if worst is None else max(worst, lat)
        for s in targets:
            if s not in serving:
                s = next((f for f in pp.failover.get(region, []) if f in serving), None)
            if s is None:
                unserved = True
                continue
            lat = _latency(env, pp, region, s)
            if lat is not None:
                live_worst = max(live_worst, lat)
    if worst is None:
        return None, None, None
    headroom = round(pp.slo_p99_ms - worst, 3)
    live = None if unserved else round(pp.slo_p99_ms - live_worst, 3)
    return round(worst, 3), headroom, live
