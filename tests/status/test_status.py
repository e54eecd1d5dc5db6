"""hybridml.ops.status (pure): synthetic observations of the real local env + its plan, each fault found."""
from __future__ import annotations

import dataclasses

import pytest

from hybridml.ops.observe import ClusterObservation, WorkloadObs, node_from_dict, pod_from_dict, workload_from_dict
from hybridml.ops.status import build_report, gpu_type, pod_tier
from infra import labels as L
from infra.loader import load_environment
from policies.placement import solve
from tests.status.fleet import copy_fleet, healthy_fleet, pod


@pytest.fixture(scope="module")
def env():
    return load_environment("local")


@pytest.fixture(scope="module")
def plan(env):
    return solve(env)


@pytest.fixture(scope="module")
def fleet0(env, plan):
    return healthy_fleet(env, plan)


@pytest.fixture
def fleet(fleet0):
    return copy_fleet(fleet0)


def _kinds(report, severity="error"):
    return sorted({f.kind for f in report.findings if f.severity == severity})


def _cpu_pipeline(plan, site="dc-local", tier=None):
    return next(p for p in plan.pipelines if site in p.replicas and p.engine == "cpu"
                and (tier is None or p.privacy_tier == tier))


def test_healthy_fleet_is_ok(env, plan, fleet):
    report = build_report(env, plan, fleet)
    assert report.ok, report.findings
    assert not report.findings
    assert all(p.state == "ok" and p.ready == p.desired and p.ok for p in report.pipelines)
    assert {p.name for p in report.pipelines} == {p.name for p in plan.pipelines}
    for s in report.sites:
        sp = plan.site(s.name)
        assert s.reachable and s.desired == s.ready == sum(sp.pipelines.values())
        assert s.pipelines_ready == s.pipelines_planned == len(sp.pipelines)
        assert s.simulated and s.pods == s.pods_running
        assert s.cores_used <= s.cores_capacity
    gpu_site = next(s for s in report.sites if s.gpus_planned)
    # every planned GPU is requested by a pod, on nodes of the planned type
    assert gpu_site.gpus_used == gpu_site.gpus_planned
    assert all(gpu_site.gpus_capacity[t] >= n for t, n in gpu_site.gpus_used.items())
    data = report.to_dict()
    assert data["ok"] is True and data["summary"]["pipelines_ok"] == len(plan.pipelines)


def test_headroom_is_slo_minus_worst_routed_latency(env, plan, fleet):
    report = build_report(env, plan, fleet)
    for row in report.pipelines:
        pp = plan.pipeline(row.name)
        worst = max(pp.latency_ms[r][s] for r, shares in pp.routing.items() for s, x in shares.items() if x > 0)
        assert row.worst_latency_ms == pytest.approx(worst)
        assert row.headroom_ms == pytest.approx(pp.slo_p99_ms - worst)
        assert row.live_headroom_ms == pytest.approx(row.headroom_ms)   # nothing down: no failover


def test_a_missing_replica_is_found(env, plan, fleet):
    pp = _cpu_pipeline(plan)
    site = next(iter(pp.replicas))
    pods = fleet.clusters[site].pods
    pods.remove(next(p for p in pods if p.labels[L.PIPELINE] == pp.name))
    report = build_report(env, plan, fleet)
    assert not report.ok and _kinds(report) == ["unready"]
    row = next(p for p in report.pipelines if p.name == pp.name)
    assert row.state == "degraded" and row.ready == pp.total_replicas - 1
    assert f"{pp.replicas[site] - 1}/{pp.replicas[site]} replicas ready" in report.errors[0].message


def test_an_unready_pod_does_not_count(env, plan, fleet):
    pp = _cpu_pipeline(plan)
    site = next(iter(pp.replicas))
    pods = fleet.clusters[site].pods
    i = next(i for i, p in enumerate(pods) if p.labels[L.PIPELINE] == pp.name)
    pods[i] = dataclasses.replace(pods[i], ready=False)
    report = build_report(env, plan, fleet)
    assert _kinds(report) == ["unready"]


def test_a_pipeline_with_no_workload_is_missing(env, plan, fleet):
    pp = _cpu_pipeline(plan)
    site = next(iter(pp.replicas))
    c = fleet.clusters[site]
    c.pods = [p for p in c.pods if p.labels.get(L.PIPELINE) != pp.name]
    c.workloads = [w for w in c.workloads if w.labels.get(L.PIPELINE) != pp.name]
    report = build_report(env, plan, fleet)
    assert _kinds(report) == ["missing"]
    assert next(p for p in report.pipelines if p.name == pp.name).state == "missing"


def test_a_misplaced_pod_is_found(env, plan, fleet):
    pp = next(p for p in plan.pipelines if "aws-use1" not in p.replicas and p.privacy_tier in ("public", "internal"))
    node = fleet.clusters["aws-use1"].nodes[-1].name     # a system node
    fleet.clusters["aws-use1"].pods.append(pod("aws-use1", pp.name, pp.privacy_tier, node, 99))
    report = build_report(env, plan, fleet)
    assert not report.ok and _kinds(report) == ["misplaced"]
    f = report.errors[0]
    assert (f.site, f.pipeline) == ("aws-use1", pp.name) and "the plan puts no replica here" in f.message
    row = next(p for p in report.pipelines if p.name == pp.name)
    assert row.sites["aws-use1"].state == "misplaced" and not row.ok


def test_a_pod_of_an_unknown_pipeline_is_misplaced(env, plan, fleet):
    node = fleet.clusters["dc-local"].nodes[0].name
    fleet.clusters["dc-local"].pods.append(pod("dc-local", "no-such-pipeline", "internal", node))
    report = build_report(env, plan, fleet)
    assert _kinds(report) == ["misplaced"] and "not a pipeline of the spec" in report.errors[0].message


def test_a_pii_pod_on_a_non_pii_node_is_a_privacy_violation(env, plan, fleet):
    pp = _cpu_pipeline(plan, tier="pii")
    c = fleet.clusters["dc-local"]
    internal = next(n for n in c.nodes if n.labels.get(L.PRIVACY_ZONE) == "internal")
    i = next(i for i, p in enumerate(c.pods) if p.labels[L.PIPELINE] == pp.name)
    c.pods[i] = dataclasses.replace(c.pods[i], node=internal.name)
    report = build_report(env, plan, fleet)
    assert not report.ok and _kinds(report) == ["privacy"]
    f = report.errors[0]
    assert f.site == "dc-local" and f.pipeline == pp.name
    assert "pii pod(s) on node privacy zone internal (home zone pii)" in f.message


def test_an_internal_pod_on_a_pii_rack_leaves_its_home_zone(env, plan, fleet):
    """The placement counted internal work against the internal racks' capacity (its home zone), so an
    internal pod on a pii rack is a finding, although a pii node could hold internal data."""
    pp = next(p for p in plan.pipelines if "dc-local" in p.replicas and p.privacy_tier in ("public", "internal"))
    c = fleet.clusters["dc-local"]
    pii_node = next(n for n in c.nodes if n.labels.get(L.PRIVACY_ZONE) == "pii")
    i = next(i for i, p in enumerate(c.pods) if p.labels[L.PIPELINE] == pp.name)
    c.pods[i] = dataclasses.replace(c.pods[i], node=pii_node.name)
    report = build_report(env, plan, fleet)
    assert not report.ok and _kinds(report) == ["privacy"]
    assert f"{pp.privacy_tier} pod(s) on node privacy zone pii (home zone internal)" in report.errors[0].message


def test_a_pii_pod_on_a_cloud_node_is_a_privacy_violation_and_misplaced(env, plan, fleet):
    pp = _cpu_pipeline(plan, tier="pii")
    c = fleet.clusters["aws-use1"]
    node = c.nodes[0]
    # even on a node labelled pii, a cloud site that does not allow pii may not hold it
    c.nodes[0] = dataclasses.replace(node, labels={**node.labels, L.PRIVACY_ZONE: "pii"})
    c.pods.append(pod("aws-use1", pp.name, "pii", node.name, 7))
    report = build_report(env, plan, fleet)
    assert _kinds(report) == ["misplaced", "privacy"]
    assert "not in an own datacenter" in next(f for f in report.errors if f.kind == "privacy").message


def test_an_unreachable_site_is_a_finding_not_a_crash(env, plan, fleet):
    fleet.clusters["aws-use1"] = ClusterObservation("aws-use1", "hybridml-aws-use1", False,
                                                    "MaxRetryError: connection refused")
    report = build_report(env, plan, fleet)
    assert not report.ok and _kinds(report) == ["unreachable"]
    site = next(s for s in report.sites if s.name == "aws-use1")
    assert not site.reachable and site.ready == 0
    for p in report.pipelines:
        if set(p.sites) == {"aws-use1"}:
            assert p.state == "unreachable" and p.live_headroom_ms is None and not p.ok


def test_a_site_missing_from_the_observation_is_unreachable(env, plan, fleet):
    del fleet.clusters["dc-local"]
    report = build_report(env, plan, fleet)
    assert "unreachable" in _kinds(report)


def test_unreconciled_inference_service_is_info_on_simulated_clusters_and_an_error_on_real_ones(env, plan, fleet):
    pp = next(p for p in plan.pipelines if p.engine == "triton")
    site = next(iter(pp.replicas))
    c = fleet.clusters[site]
    c.pods = [p for p in c.pods if p.labels.get(L.PIPELINE) != pp.name]
    c.workloads = [w for w in c.workloads if w.labels.get(L.PIPELINE) != pp.name]
    c.workloads.append(WorkloadObs("InferenceService", "ml-internal", pp.name, {L.PIPELINE: pp.name}, 1, None, False))
    report = build_report(env, plan, fleet)
    assert report.ok and _kinds(report, "info") == ["unobserved"]
    assert next(p for p in report.pipelines if p.name == pp.name).state == "declared"
    c.nodes = [dataclasses.replace(n, labels={k: v for k, v in n.labels.items() if k != L.SIMULATED})
               for n in c.nodes]
    report = build_report(env, plan, fleet)
    assert not report.ok and _kinds(report) == ["unobserved"]


def test_kserve_predictor_pods_count_through_their_inference_service(env, plan, fleet):
    pp = next(p for p in plan.pipelines if p.engine == "triton")
    site = next(iter(pp.replicas))
    c = fleet.clusters[site]
    c.workloads.append(WorkloadObs("InferenceService", "ml-internal", "isvc-x", {L.PIPELINE: pp.name}, 1, 1, True))
    for i, p in enumerate(c.pods):
        if p.labels.get(L.PIPELINE) == pp.name:
            lbls = {k: v for k, v in p.labels.items() if k != L.PIPELINE}
            c.pods[i] = dataclasses.replace(p, labels={**lbls, "serving.kserve.io/inferenceservice": "isvc-x"})
    report = build_report(env, plan, fleet)
    assert report.ok, report.findings


def test_lws_workers_do_not_count_as_replicas(env, plan, fleet):
    pp = next(p for p in plan.pipelines if p.engine == "vllm")
    site = next(iter(pp.replicas))
    c = fleet.clusters[site]
    mine = [p for p in c.pods if p.labels.get(L.PIPELINE) == pp.name]
    c.pods = [p for p in c.pods if p not in mine]
    for p in mine:
        c.pods.append(dataclasses.replace(p, labels={**p.labels, "hybridml.io/lws-role": "leader"}))
        c.pods.append(dataclasses.replace(p, name=p.name + "-1", labels={**p.labels, "hybridml.io/lws-role": "worker"}))
    row = next(p for p in build_report(env, plan, fleet).pipelines if p.name == pp.name)
    assert row.ready == row.desired and row.sites[site].pods == 2 * len(mine)


def test_pending_pods_are_a_capacity_finding(env, plan, fleet):
    fleet.clusters["dc-local"].pods.append(pod("dc-local", "x", "internal", None, phase="Pending", ready=False,
                                               labels={L.PIPELINE: ""}))
    report = build_report(env, plan, fleet)
    assert _kinds(report) == ["capacity"] and "1 pod(s) not scheduled" in report.errors[0].message


def test_negative_headroom_is_a_latency_finding(env, plan, fleet):
    bad = plan.model_copy(deep=True)
    pp = bad.pipelines[0]
    pp.slo_p99_ms = min(v for row in pp.latency_ms.values() for v in row.values()) - 10
    report = build_report(env, bad, fleet)
    assert _kinds(report) == ["latency"] and report.errors[0].pipeline == pp.name
    assert next(p for p in report.pipelines if p.name == pp.name).headroom_ms < 0


def test_pipelines_filter_limits_rows(env, plan, fleet):
    name = plan.pipelines[0].name
    report = build_report(env, plan, fleet, pipelines={name})
    assert [p.name for p in report.pipelines] == [name]


# --------------------------------------------------------------------------- reducers (observe.py, pure)


def test_reducers_read_kubernetes_json():
    n = node_from_dict({"metadata": {"name": "n1", "labels": {L.GPU_PRODUCT: "NVIDIA-L4"}},
                        "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
                        "status": {"allocatable": {"cpu": "3920m", "memory": "15Gi", "nvidia.com/gpu": "1"},
                                   "conditions": [{"type": "Ready", "status": "True"}]}})
    assert (n.cpu, n.memory_gib, n.gpus, n.ready, n.taints) == (3.92, 15, 1, True, (("nvidia.com/gpu", "", "NoSchedule"),))
    assert gpu_type(n.labels[L.GPU_PRODUCT]) == "L4" and gpu_type("NVIDIA-B200") == "B200"
    p = pod_from_dict({"metadata": {"name": "p", "namespace": "ml-pii"},
                       "spec": {"nodeName": "n1", "containers": [
                           {"resources": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": "1"}}},
                           {"resources": {"limits": {"cpu": "500m"}}}]},
                       "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    assert (p.cpu, p.memory_gib, p.gpus, p.ready, p.node, p.active) == (2.5, 1, 1, True, "n1", True)
    assert pod_tier(p).value == "pii"
    d = workload_from_dict("Deployment", {"metadata": {"name": "d", "generation": 1}, "spec": {"replicas": 3},
                                          "status": {"observedGeneration": 1, "readyReplicas": 2}})
    assert (d.replicas, d.ready_replicas, d.reconciled) == (3, 2, True)
    i = workload_from_dict("InferenceService", {"metadata": {"name": "i"}, "spec": {"predictor": {"minReplicas": 2}}})
    assert (i.replicas, i.ready_replicas, i.reconciled) == (2, None, False)
    i = workload_from_dict("InferenceService", {"metadata": {"name": "i"}, "spec": {"predictor": {}},
                                                "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert (i.replicas, i.ready_replicas, i.reconciled) == (1, 1, True)


def test_default_context_matches_the_program():
    from clusters.local_cluster import default_context
    from hybridml.cli import status as cmd

    assert cmd.default_context("aws-use1") == default_context("aws-use1")
