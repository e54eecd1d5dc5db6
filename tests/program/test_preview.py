"""`hybridml preview` of the shipped environments (dev fast, prod full), YAML output, the CLI."""
from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from hybridml.ops.preview import write_kubernetes_yaml
from tests.pulumi_mocks import cluster_counts, preview


def test_dev_preview_and_yaml_per_cluster(tmp_path):
    result = preview("dev")
    assert result.count > 100
    written = write_kubernetes_yaml(result, tmp_path)
    assert set(written) == set(result.sites)
    for site, n in written.items():
        docs = list(yaml.safe_load_all((tmp_path / f"{site}.yaml").read_text()))
        assert len(docs) == n
        for d in docs:
            assert d["apiVersion"] and d["kind"] and d["metadata"]["name"], d
            if d["kind"] == "Secret":
                assert all(v == "<redacted>" for v in (d.get("data") or {}).values())
        assert any(d["kind"] == "Namespace" for d in docs)
    again = tmp_path / "again"
    write_kubernetes_yaml(preview("dev", stack="yaml-again"), again)
    for site in written:   # deterministic output: stable diffs between runs
        assert (again / f"{site}.yaml").read_text() == (tmp_path / f"{site}.yaml").read_text()


@pytest.mark.slow
def test_prod_preview_builds_every_site():
    result = preview("prod")
    from infra.loader import load_environment

    env = load_environment("prod")
    assert result.sites == [s.name for s in env.sites]
    for site in env.cloud_sites:
        assert cluster_counts(result, site.name)["aws:eks/cluster:Cluster"] == 1
    for dc in env.datacenters:
        assert cluster_counts(result, dc.name)["hybridml:clusters:OnPremCluster"] == 1
    print(f"\nprod preview: {result.count} resources in {result.build_seconds:.2f} s "
          f"= {result.resources_per_second:,.0f} resources/s, {result.resources_per_cpu_second:,.0f} per CPU second "
          f"(plan {result.plan_seconds:.2f} s)")


def test_cli_preview_table_and_out(tmp_path):
    from hybridml.cli import app

    res = CliRunner().invoke(app, ["preview", "local", "--mode", "local", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "aws-use1" in res.output and "resources/s" in res.output
    assert (tmp_path / "dc-local.yaml").exists()


def test_cli_preview_bad_spec_exits_2(tmp_path):
    from hybridml.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbogus: 1\n")
    res = CliRunner().invoke(app, ["preview", str(bad)])
    assert res.exit_code == 2
