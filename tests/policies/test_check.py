"""`hybridml check`: shipped stacks pass every mandatory rule; deliberately broken variants are blocked."""
from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from hybridml.cli import app
from hybridml.ops.check import run_check
from infra.loader import load_environment
from policies.placement import solve
from tests.conftest import REPO


def mandatory(report):
    return sorted({f.rule for f in report.mandatory})


@pytest.mark.parametrize("spec", ["local", "dev"])
def test_shipped_stacks_pass_every_mandatory_rule(spec):
    report = run_check(spec)
    assert report.resources > 100
    assert report.mandatory == [], [(f.rule, f.resource, f.message) for f in report.mandatory]


@pytest.mark.slow
def test_prod_passes_every_mandatory_rule():
    report = run_check("prod")
    assert report.resources > 5000
    assert report.mandatory == []


def test_cli_check_local_exit_0():
    result = CliRunner().invoke(app, ["check", "local"])
    assert result.exit_code == 0, result.output
    assert "0 mandatory violation(s)" in result.output


def test_pii_pipeline_forced_onto_cloud_site_is_blocked(tmp_path):
    plan = solve(load_environment("local")).model_dump()
    recs = next(p for p in plan["pipelines"] if p["name"] == "recs-home")
    recs["replicas"] = {"aws-use1": 6}
    recs["routing"] = {r: {"aws-use1": 1.0} for r in recs["routing"]}
    recs["latency_ms"] = {r: {"aws-use1": 60.0} for r in recs["routing"]}
    path = tmp_path / "forced.json"
    path.write_text(json.dumps(plan))
    result = CliRunner().invoke(app, ["check", "local", "--plan", str(path)])
    assert result.exit_code == 1
    assert "plan-privacy" in result.output and "pii pipeline placed on aws-use1" in result.output


def test_public_eks_endpoint_is_blocked(tmp_path):
    spec = yaml.safe_load((REPO / "infra" / "environments" / "dev.yaml").read_text())
    spec["sites"][0]["api_allowed_cidrs"] = ["0.0.0.0/0"]
    path = tmp_path / "dev-public.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    report = run_check(str(path))
    assert mandatory(report) == ["aws-eks-private-endpoint"]
    assert report.mandatory[0].resource.endswith("aws-use1-eks")


def _broken_local(monkeypatch, patch) -> list[str]:
    patch(monkeypatch)
    return mandatory(run_check("local"))


def test_privileged_pod_is_blocked(monkeypatch):
    from workloads.render import pods

    original = pods.container_security_context
    rules = _broken_local(monkeypatch, lambda mp: mp.setattr(
        pods, "container_security_context", lambda *a, **k: {**original(*a, **k), "privileged": True}))
    assert "pss-privileged" in rules


def test_unpinned_image_is_blocked(monkeypatch):
    from workloads.render import pods

    original = pods.container

    def unpinned(name, image, **kw):
        return original(name, image.rsplit(":", 1)[0] if image.startswith("vllm/") else image, **kw)

    rules = _broken_local(monkeypatch, lambda mp: mp.setattr(pods, "container", unpinned))
    assert "k8s-pinned-images" in rules


def test_gpu_pod_without_toleration_is_blocked(monkeypatch):
    from workloads.render import vllm

    rules = _broken_local(monkeypatch, lambda mp: mp.setattr(vllm, "tolerations", lambda *a, **k: []))
    assert "gpu-pod-scheduling" in rules
