"""AWS preflight against moto (no real AWS).

moto's Service Quotas backend only knows the VPC quotas, so the tests give it EC2's vCPU quotas by
patching its backend data: `get_service_quota` of the per-region ServiceQuotasBackend instance
(moto.servicequotas.models.servicequotas_backends[account][region]) answers our quota table.
Instance type offerings come from moto's own per-zone snapshot of AWS.
"""
from __future__ import annotations

import copy

import pytest
from typer.testing import CliRunner

from tests.conftest import SMALL_SPEC, dump

moto = pytest.importorskip("moto")
from moto import mock_aws  # noqa: E402
from moto.core import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.servicequotas.models import servicequotas_backends  # noqa: E402

from clusters.preflight import QUOTA_CODES, needs, run_preflight  # noqa: E402
from clusters.sizing import system_pool_plan  # noqa: E402
from infra.loader import parse_environment  # noqa: E402
from policies.placement import solve  # noqa: E402


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def give_quotas(monkeypatch, region: str, quotas: dict[str, int]) -> None:
    """Make moto answer EC2 vCPU quotas for `region` (unknown codes still raise NoSuchResource)."""
    backend = servicequotas_backends[DEFAULT_ACCOUNT_ID][region]
    original = backend.get_service_quota
    by_code = {QUOTA_CODES[f]: v for f, v in quotas.items()}

    def get_service_quota(service_code: str, quota_code: str):
        if service_code == "ec2" and quota_code in by_code:
            return {"ServiceCode": "ec2", "QuotaCode": quota_code, "QuotaName": quota_code,
                    "Value": float(by_code[quota_code]), "Unit": "None", "Adjustable": True, "GlobalQuota": False}
        return original(service_code, quota_code)

    monkeypatch.setattr(backend, "get_service_quota", get_service_quota)


@pytest.fixture(scope="module")
def tiny():
    env = parse_environment(dump(copy.deepcopy(SMALL_SPEC)))
    return env, solve(env)


def test_needs_count_planned_nodes_and_the_system_node_group(tiny):
    env, plan = tiny
    (need,) = needs(env, plan)
    sp = plan.site("aws-use1")
    assert need.region == "us-east-1"
    assert need.vcpus["P"] == sp.nodes["p5.48xlarge"] * 192
    system = system_pool_plan(env, env.site("aws-use1"), sp)
    assert need.instance_types[system.instance_type] == system.max_nodes >= 3
    assert need.vcpus["standard"] >= system.max_nodes * system.vcpus


@mock_aws
def test_enough_quota_and_offered_types_pass(tiny, monkeypatch):
    env, plan = tiny
    give_quotas(monkeypatch, "us-east-1", {"P": 4000, "G": 4000, "standard": 4000})
    report = run_preflight(env, plan)
    assert report.ok, report.shortfalls
    assert {q.family for q in report.quotas} == set(needs(env, plan)[0].vcpus)
    assert all(q.quota == 4000 for q in report.quotas)


@mock_aws
def test_quota_shortfall_is_reported_per_region(tiny, monkeypatch):
    env, plan = tiny
    need = needs(env, plan)[0].vcpus["P"]
    give_quotas(monkeypatch, "us-east-1", {"P": need - 96, "G": 4000, "standard": 4000})
    report = run_preflight(env, plan)
    assert not report.ok
    (short,) = report.shortfalls
    assert (short.region, short.kind, short.subject) == ("us-east-1", "quota", "P")
    assert short.need == need and short.have == need - 96
    assert "short by 96" in short.detail and "L-417A185B" in short.detail


@mock_aws
def test_unreadable_quota_is_a_shortfall(tiny):
    env, plan = tiny   # moto knows no EC2 quotas at all without give_quotas
    report = run_preflight(env, plan)
    assert {f.kind for f in report.shortfalls} == {"quota-unreadable"}


@mock_aws
def test_type_not_offered_in_the_sites_zones(monkeypatch):
    spec = copy.deepcopy(SMALL_SPEC)
    # moto's snapshot offers p4de.24xlarge in us-east-1b/c only: a site in us-east-1a alone cannot run it
    spec["sites"][0]["zones"] = ["us-east-1a"]
    spec["sites"][0]["instance_types"][1]["name"] = "p4de.24xlarge"
    env = parse_environment(dump(spec))
    plan = solve(env)
    give_quotas(monkeypatch, "us-east-1", {"P": 10000, "G": 10000, "standard": 10000})
    report = run_preflight(env, plan)
    offering = [f for f in report.shortfalls if f.kind == "offering"]
    assert [f.subject for f in offering] == ["p4de.24xlarge"]
    assert "us-east-1a" in offering[0].detail
    assert report.offerings["us-east-1"]["p4de.24xlarge"] == ["us-east-1b", "us-east-1c"]


@mock_aws
def test_cli_prints_shortfalls_and_exits_1(tmp_path, monkeypatch):
    from hybridml.cli import app

    spec = tmp_path / "tiny.yaml"
    spec.write_text(dump(copy.deepcopy(SMALL_SPEC)))
    give_quotas(monkeypatch, "us-east-1", {"P": 8, "G": 4000, "standard": 4000})
    result = CliRunner().invoke(app, ["preflight", str(spec), "--check", "aws"])
    assert result.exit_code == 1, result.output
    assert "SHORT" in result.output and "us-east-1" in result.output
    give_quotas(monkeypatch, "us-east-1", {"P": 100000, "G": 4000, "standard": 4000})
    result = CliRunner().invoke(app, ["preflight", str(spec), "--check", "aws"])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    # the spec's datacenter cannot be reached without a kubeconfig (a spec file names no stack): bad input
    result = CliRunner().invoke(app, ["preflight", str(spec), "--check", "datacenters"])
    assert result.exit_code == 2 and "--kubeconfig" in result.output, result.output
