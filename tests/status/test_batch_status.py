"""`hybridml status` for batch pipelines (hybridml/ops/batch_status.py, pure): each site's RayJob or RayCluster, its
state as KubeRay reports it, workers ready vs planned, and the findings (synthetic observations of the local env)."""
from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from hybridml.ops.observe import ray_from_dict
from hybridml.ops.status import build_report
from infra.loader import load_environment
from policies.placement import solve
from tests.status.fleet import copy_fleet, healthy_fleet


@pytest.fixture(scope="module")
def env():
    return load_environment("local")


@pytest.fixture(scope="module")
def plan(env):
    return solve(env)


@pytest.fixture
def fleet(env, plan):
    return copy_fleet(healthy_fleet(env, plan))


def _batch(report, name):
    return next(b for b in report.batch if b.name == name)


def _replace_ray(fleet, site, name, **changes):
    obs = fleet.clusters[site]
    obs.ray = [dataclasses.replace(o, **changes) if o.name == name else o for o in obs.ray]


def test_a_healthy_fleet_shows_running_and_idle_batch_pipelines(env, plan, fleet):
    report = build_report(env, plan, fleet)
    assert report.ok, [f.message for f in report.errors]
    captions, profiles = _batch(report, "catalog-captions"), _batch(report, "profile-embeddings")
    assert (captions.state, captions.workers_ready, captions.workers_planned) == ("running", 2, 2)
    assert captions.sites["aws-use1"].kind == "RayJob" and captions.sites["aws-use1"].name == "catalog-captions"
    assert (profiles.state, profiles.workers_ready, profiles.workers_planned) == ("idle", 0, 3)
    data = report.to_dict()
    assert data["summary"]["batch"] == 2 and data["summary"]["batch_ok"] == 2
    assert {b["name"]: b["ok"] for b in data["batch"]} == {"catalog-captions": True, "profile-embeddings": True}


def test_a_missing_rayjob_is_an_error_and_a_failed_one_a_warning(env, plan, fleet):
    fleet.clusters["aws-use1"].ray = [o for o in fleet.clusters["aws-use1"].ray if o.name != "catalog-captions"]
    report = build_report(env, plan, fleet)
    assert not report.ok
    (f,) = [f for f in report.errors if f.pipeline == "catalog-captions"]
    assert f.kind == "missing" and "no RayJob of it is there" in f.message
    assert _batch(report, "catalog-captions").state == "missing"


def test_simulated_clusters_never_report_the_job_and_that_is_no_error(env, plan, fleet):
    """kwok pods run no Ray: the operator keeps the RayJob Running without a job status, then fails it once the
    submitter (completed by kwok) is 30 s done. On a simulated cluster both read `waiting` (an info finding)."""
    _replace_ray(fleet, "aws-use1", "catalog-captions", job_status="")
    report = build_report(env, plan, fleet)
    assert report.ok and _batch(report, "catalog-captions").state == "waiting"
    assert any(f.severity == "info" and "never reads the job's status" in f.message for f in report.findings)
    _replace_ray(fleet, "aws-use1", "catalog-captions", state="Failed", job_status="FAILED",
                 message="JobDeploymentStatusTransitionGracePeriodExceeded The RayJob submitter finished at ...")
    report = build_report(env, plan, fleet)
    assert report.ok and _batch(report, "catalog-captions").state == "waiting"
    # any other failure is a warning
    _replace_ray(fleet, "aws-use1", "catalog-captions", message="DeadlineExceeded")
    report = build_report(env, plan, fleet)
    assert report.ok and _batch(report, "catalog-captions").state == "failed"
    assert any(f.severity == "warning" and f.pipeline == "catalog-captions" for f in report.findings)


def test_fewer_workers_than_planned_is_starting_and_no_status_is_declared(env, plan, fleet):
    obs = fleet.clusters["aws-use1"]
    obs.pods = [p for p in obs.pods if not p.name.startswith("catalog-captions-worker-1")]
    report = build_report(env, plan, fleet)
    row = _batch(report, "catalog-captions")
    assert (row.state, row.workers_ready) == ("starting", 1)
    _replace_ray(fleet, "dc-local", "profile-embeddings", reconciled=False, state="")
    report = build_report(env, plan, fleet)
    assert _batch(report, "profile-embeddings").state == "declared"
    assert any(f.kind == "unobserved" and "KubeRay operator" in f.message for f in report.errors)


def test_ray_objects_are_read_from_their_status():
    job = ray_from_dict("RayJob", {"metadata": {"name": "j", "namespace": "ml-internal", "labels": {"a": "b"}},
                                   "status": {"jobDeploymentStatus": "Running", "rayClusterName": "j-abcde", "jobId": "x"}})
    assert (job.state, job.job_status, job.cluster, job.reconciled) == ("Running", "", "j-abcde", True)
    cluster = ray_from_dict("RayCluster", {"metadata": {"name": "c"}, "status": {"state": "ready", "readyWorkerReplicas": 2,
                                                                                "desiredWorkerReplicas": 3}})
    assert (cluster.state, cluster.ready_workers, cluster.desired_workers) == ("ready", 2, 3)
    assert not ray_from_dict("RayJob", {"metadata": {"name": "j"}}).reconciled


def test_cli_prints_the_batch_table(env, plan, fleet, monkeypatch, tmp_path):
    from hybridml.cli import app
    from hybridml.cli import status as cli_status

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setattr(cli_status, "observe_fleet", lambda kc, contexts: fleet)
    result = CliRunner().invoke(app, ["status", "local", "--kubeconfig", str(kubeconfig)], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert "batch pipelines (2; Ray)" in result.output and "profile-embeddings" in result.output and "idle" in result.output
