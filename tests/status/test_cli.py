"""`hybridml status`: exit codes and the --json shape, with an injected observer (no cluster)."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hybridml.cli import app
from hybridml.cli import status as cmd
from hybridml.ops.observe import ClusterObservation
from infra.loader import load_environment
from policies.placement import solve
from tests.status.fleet import copy_fleet, healthy_fleet

runner = CliRunner()


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory):
    env = load_environment("local")
    plan = solve(env)
    path = tmp_path_factory.mktemp("plan") / "local.json"
    path.write_text(plan.model_dump_json())
    return path, env, plan


@pytest.fixture
def kubeconfig(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\n")
    return path


@pytest.fixture
def observe(monkeypatch, plan_path):
    """Replace the cluster reader; returns the calls seen and lets a test pick the observation."""
    _, env, plan = plan_path
    state = {"fleet": healthy_fleet(env, plan), "calls": []}

    def fake(kubeconfig, contexts):
        state["calls"].append((kubeconfig, dict(contexts)))
        return copy_fleet(state["fleet"])

    monkeypatch.setattr(cmd, "observe_fleet", fake)
    return state


def _run(*args):
    return runner.invoke(app, ["status", *map(str, args)])


def test_unknown_environment_exits_2(observe):
    res = _run("no-such-env")
    assert res.exit_code == 2, res.output
    assert not observe["calls"]


def test_bad_plan_file_exits_2_and_names_file_and_field(observe, tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text("{not json")
    res = _run("local", "--plan", bad)
    assert res.exit_code == 2
    assert str(bad) in res.output and "--plan" in res.output and "not a placement plan" in res.output
    res = _run("local", "--plan", tmp_path / "missing.json")
    assert res.exit_code == 2


def test_plan_of_another_environment_exits_2(observe, plan_path, tmp_path):
    path, _, plan = plan_path
    other = tmp_path / "other.json"
    other.write_text(plan.model_copy(update={"environment": "prod"}).model_dump_json())
    res = _run("local", "--plan", other)
    assert res.exit_code == 2 and "for environment 'prod', not 'local'" in res.output


@pytest.mark.parametrize("args,needle", [
    (["--context", "aws-use1"], "expected SITE=CONTEXT"),
    (["--context", "nowhere=ctx"], "no site 'nowhere'"),
    (["--pipelines", "nope"], "no pipeline nope"),
    (["--kubeconfig", "/nonexistent/kubeconfig"], "no such file"),
])
def test_bad_options_exit_2(observe, plan_path, args, needle):
    res = _run("local", "--plan", plan_path[0], *args)
    assert res.exit_code == 2 and needle in res.output, res.output


def test_json_shape_of_a_healthy_fleet(observe, plan_path, kubeconfig):
    path, env, plan = plan_path
    res = _run("local", "--plan", path, "--kubeconfig", kubeconfig, "--json", "--context", "dc-local=my-dc")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["ok"] is True and data["environment"] == "local" and data["plan_source"] == str(path)
    assert set(data) >= {"sites", "pipelines", "findings", "summary", "timings", "fetch_seconds", "simulated"}
    assert [s["name"] for s in data["sites"]] == [s.name for s in env.sites]
    site = data["sites"][0]
    assert set(site) >= {"desired", "ready", "pods", "gpus_used", "gpus_capacity", "cores_used", "cores_capacity",
                         "reachable", "simulated"}
    row = data["pipelines"][0]
    assert set(row) >= {"name", "desired", "ready", "state", "headroom_ms", "live_headroom_ms", "sites", "ok"}
    assert data["summary"]["pipelines_ok"] == len(plan.pipelines) and data["summary"]["errors"] == 0
    kc, contexts = observe["calls"][0]
    assert kc == kubeconfig and contexts == {"aws-use1": "hybridml-aws-use1", "dc-local": "my-dc"}


def test_unhealthy_fleet_exits_1_and_the_table_names_the_problem(observe, plan_path, kubeconfig):
    observe["fleet"].clusters["aws-use1"] = ClusterObservation("aws-use1", "hybridml-aws-use1", False,
                                                               "connection refused")
    res = _run("local", "--plan", plan_path[0], "--kubeconfig", kubeconfig)
    assert res.exit_code == 1
    assert "unreachable" in res.output and "connection refused" in res.output and "not healthy" in res.output
    res = _run("local", "--plan", plan_path[0], "--kubeconfig", kubeconfig, "--json")
    assert res.exit_code == 1 and json.loads(res.output)["ok"] is False


def test_table_of_a_healthy_fleet(observe, plan_path, kubeconfig):
    res = _run("local", "--plan", plan_path[0], "--kubeconfig", kubeconfig, "--all")
    assert res.exit_code == 0, res.output
    assert "fleet status: local" in res.output and "healthy" in res.output
    assert "GPUs and racks are simulated" in res.output
    for p in plan_path[2].pipelines:
        assert p.name in res.output


def test_missing_default_kubeconfig_reports_every_site_unreachable(monkeypatch, plan_path, tmp_path):
    monkeypatch.setattr(cmd, "default_kubeconfig", lambda env: tmp_path / "none")
    monkeypatch.setattr(cmd, "observe_fleet", lambda *a: pytest.fail("must not be called"))
    res = _run("local", "--plan", plan_path[0], "--json")
    assert res.exit_code == 1
    data = json.loads(res.output)
    assert data["summary"]["sites_unreachable"] == 2


def test_saved_plan_of_the_rollout_driver_is_used_by_default(observe, plan_path, kubeconfig, monkeypatch):
    monkeypatch.setattr(cmd, "default_plan_path", lambda env: plan_path[0])
    res = _run("local", "--kubeconfig", kubeconfig, "--json")
    assert res.exit_code == 0 and json.loads(res.output)["plan_source"] == str(plan_path[0])
