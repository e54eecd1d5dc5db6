"""Batch pipelines in `hybridml status`: each site's RayJob or RayCluster, its state as the KubeRay operator reports
it, and its workers ready vs the plan's. Pure: observations in, rows and findings out (hybridml/ops/status.py).

States per site, from best to worst (a pipeline's state is the worst over its sites):

- `running`: the job (or a run of a recurring pipeline) has every planned worker ready;
- `idle`: a recurring pipeline between runs: its RayCluster is ready with the head only (Ray's autoscaler starts
  the workers when the CronJob submits a run);
- `complete`: the RayJob finished (`jobDeploymentStatus: Complete`);
- `waiting`: on a simulated cluster, Ray never reports the job: kwok pods run no Ray, so the operator cannot read the
  head's dashboard; it keeps the RayJob Running, then fails it (`JobDeploymentStatusTransitionGracePeriodExceeded`)
  30 s after kwok completed the submitter pod (README "Batch inference on Ray"; an info finding);
- `starting`: the operator is bringing the cluster up, or fewer workers are ready than planned;
- `failed`: the RayJob or RayCluster failed (a warning: batch work does not serve users);
- `declared`: no operator has written a status (is KubeRay installed?); `missing`: the plan puts workers at the
  site and no RayJob/RayCluster of the pipeline is there; `unreachable`: the cluster could not be read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from hybridml.ops.observe import ClusterObservation, FleetObservation, RayObs
from infra.spec import Environment
from policies.placement.plan import PlacementPlan

BATCH_PIPELINE = "hybridml.io/batch-pipeline"      # = workloads.render.meta.BATCH_PIPELINE
WORKER_COMPONENT = "batch-worker"
STATES = ("running", "idle", "complete", "waiting", "starting", "failed", "declared", "missing", "unreachable")
OK_STATES = ("running", "idle", "complete", "waiting")
NEVER_REPORTED = "JobDeploymentStatusTransitionGracePeriodExceeded"   # KubeRay's reason: the job never reached a state


class _Finding(Protocol):
    def __call__(self, severity: str, kind: str, site: str | None, pipeline: str | None, message: str) -> object: ...


@dataclass
class BatchSiteStatus:
    site: str
    kind: str                 # RayJob | RayCluster (what the program renders for this pipeline)
    name: str                 # the object found ("" when missing)
    state: str
    detail: str               # the operator's words: deployment status, job status, cluster state, reason
    workers_planned: int
    workers_ready: int
    pods: int                 # active pods of the pipeline here (head, workers, submitter)


@dataclass
class BatchStatus:
    name: str
    engine: str
    privacy_tier: str
    schedule: str | None
    state: str
    workers_planned: int
    workers_ready: int
    sites: dict[str, BatchSiteStatus] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state in OK_STATES


def _site_state(obj: RayObs | None, kind: str, ready: int, planned: int, simulated: bool) -> tuple[str, str]:
    if obj is None:
        return "missing", ""
    detail = f"{obj.kind} {obj.state or '(no status)'}" + (f", job {obj.job_status}" if obj.job_status else "")
    detail += f" ({obj.message})" if obj.message else ""
    if not obj.reconciled:
        return "declared", detail
    state = obj.state.lower()
    if kind == "RayJob":
        # kwok pods run no Ray: the head's dashboard never answers, so the operator never learns the job's status; it
        # keeps the RayJob Running, and fails it 30 s after the submitter pod (which kwok completes) has finished
        if simulated and (state == "running" and not obj.job_status or state == "failed" and NEVER_REPORTED in obj.message):
            return "waiting", detail
        if state == "complete":
            return "complete", detail
        if state in ("failed", "validationfailed"):
            return "failed", detail
        return ("running" if state == "running" and ready >= planned else "starting"), detail
    if state == "failed":
        return "failed", detail
    if state == "ready":
        return ("idle" if ready == 0 else "running" if ready >= planned else "starting"), detail
    return "starting", detail


def batch_report(env: Environment, plan: PlacementPlan, fleet: FleetObservation, finding: _Finding,
                 errors: str, warnings: str, infos: str) -> list[BatchStatus]:
    """One row per batch pipeline of the plan; `finding(severity, kind, site, pipeline, message)` records findings
    (severities named by `errors`, `warnings`, `infos`)."""
    rows: list[BatchStatus] = []
    for bp in (plan.batch.pipelines if plan.batch else []):
        kind = "RayCluster" if bp.schedule else "RayJob"
        row = BatchStatus(name=bp.name, engine=bp.engine, privacy_tier=bp.privacy_tier, schedule=bp.schedule,
                          state="running", workers_planned=bp.workers, workers_ready=0)
        for share in bp.sites:
            obs = fleet.clusters.get(share.site) or ClusterObservation(share.site, "", False, "not observed")
            if not obs.reachable:
                row.sites[share.site] = BatchSiteStatus(share.site, kind, "", "unreachable", obs.error, share.workers, 0, 0)
                continue
            simulated = bool(obs.nodes) and all(n.simulated for n in obs.nodes)
            obj = next((o for o in obs.ray if o.kind == kind and o.labels.get(BATCH_PIPELINE) == bp.name), None)
            pods = [p for p in obs.pods if p.active and p.labels.get(BATCH_PIPELINE) == bp.name]
            ready = sum(1 for p in pods if p.labels.get("app.kubernetes.io/component") == WORKER_COMPONENT
                        and p.ready and p.phase == "Running")
            state, detail = _site_state(obj, kind, ready, share.workers, simulated)
            row.sites[share.site] = BatchSiteStatus(share.site, kind, obj.name if obj else "", state, detail,
                                                    share.workers, ready, len(pods))
            what = f"{bp.name} at {share.site}"
            if state == "missing":
                finding(errors, "missing", share.site, bp.name, f"{what}: the plan puts {share.workers} worker(s) there; "
                                                                f"no {kind} of it is there")
            elif state == "declared":
                finding(errors, "unobserved", share.site, bp.name, f"{what}: {kind} {obj.name if obj else ''} has no "
                                                                   "status (is the KubeRay operator running?)")
            elif state == "failed":
                finding(warnings, "batch", share.site, bp.name, f"{what}: {detail}")
            elif state == "waiting":
                finding(infos, "batch", share.site, bp.name,
                        f"{what}: {detail}; {ready}/{share.workers} workers ready: simulated cluster, kwok pods run no "
                        "Ray, so the operator never reads the job's status from the head's dashboard")
            elif state == "starting":
                finding(warnings, "batch", share.site, bp.name, f"{what}: {detail}; {ready}/{share.workers} workers ready")
        row.workers_ready = sum(s.workers_ready for s in row.sites.values())
        row.state = max((s.state for s in row.sites.values()), key=STATES.index, default="missing")
        rows.append(row)
    return rows
