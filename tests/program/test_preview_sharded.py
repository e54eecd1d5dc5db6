"""`hybridml preview` of the stacks `hybridml up` deploys (hybridml/preview_shards.py): site stacks in
worker processes, then the fleet stack reading them by stack reference; the monolithic stack for comparison."""
from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from hybridml.ops.preview import run_preview
from hybridml.ops.preview_shards import run_sharded_preview


def _by_cluster(manifests: dict[str, list[dict]]) -> dict[str, list[str]]:
    return {cluster: sorted(json.dumps(doc, sort_keys=True) for doc in docs) for cluster, docs in manifests.items()}


@pytest.fixture(scope="module")
def dev_sharded():
    return run_sharded_preview("dev", workers=2, want_manifests=True)


def test_site_stacks_and_the_fleet_stack_build_what_the_whole_stack_builds(dev_sharded):
    whole = run_preview("dev", stack="dev")
    assert {s.stack for s in dev_sharded.stacks} == {"dev-dc-ashburn", "dev-aws-use1", "dev-fleet"}
    assert dev_sharded.stacks[-1].stack == "dev-fleet"          # after the site stacks it references
    assert not dev_sharded.failed and dev_sharded.workers == 2
    # every Kubernetes object, on the same cluster, with the same manifest (fleet directory included)
    assert _by_cluster(dev_sharded.manifests()) == _by_cluster(whole.kubernetes_manifests())
    # what sharding adds: the fleet stack's stack references and the providers it makes from them
    fleet = next(s for s in dev_sharded.stacks if s.role == "fleet")
    fleet_only = dev_sharded.counts()["(fleet stack dev-fleet)"]
    assert fleet_only["pulumi:pulumi:StackReference"] == 2 and fleet_only["hybridml:clusters:ReferencedCluster"] == 2
    assert dev_sharded.count == whole.count + 2 * 3        # per site: a reference, a component, a provider
    assert fleet.count > 0 and dev_sharded.resources_per_second > 0


def test_the_fleet_stack_reads_each_site_stacks_own_outputs(dev_sharded):
    sites = {s.stack: s for s in dev_sharded.stacks if s.role == "site"}
    for stack in sites.values():
        (site,) = stack.sites
        member = stack.outputs["fleet_members"][site]
        assert member["site"] == site and member["kubeconfig"]    # how the fleet stack reaches the cluster
        assert "fleet_members" in stack.secret_outputs             # kubeconfigs travel as secrets
    directory = [d for docs in dev_sharded.manifests().values() for d in docs
                 if d["metadata"]["name"] == "hybridml-fleet-directory"]
    assert len(directory) == 2
    content = json.loads(directory[0]["data"]["fleet.json"])
    assert set(content["sites"]) == {"aws-use1", "dc-ashburn"}


def test_a_partial_selection_previews_its_site_stacks_only():
    result = run_sharded_preview("dev", sites=["aws-use1"], workers=2)
    assert [(s.stack, s.role) for s in result.stacks] == [("dev-aws-use1", "site")]
    assert result.workers == 1                   # never more processes than stacks


def test_a_failing_stack_is_reported_and_the_others_go_on(monkeypatch):
    import hybridml.ops.preview as preview_module

    real = preview_module.run_preview

    def failing(spec, **kw):
        if kw.get("stack") == "dev-aws-use1":
            raise RuntimeError("boom in aws-use1")
        return real(spec, **kw)

    monkeypatch.setattr(preview_module, "run_preview", failing)   # the forked workers inherit it
    result = run_sharded_preview("dev", workers=2)
    failed = {s.stack: s.error for s in result.failed}
    assert "boom in aws-use1" in failed["dev-aws-use1"]
    # as `hybridml up` does, the fleet stack (it reads every site stack) is not run without one of them
    assert failed["dev-fleet"] == "not previewed: its site stacks failed (dev-aws-use1)"
    assert next(s for s in result.stacks if s.stack == "dev-dc-ashburn").count > 100


def test_cli_previews_the_sharded_layout_by_default(tmp_path):
    from hybridml.cli import app

    res = CliRunner().invoke(app, ["preview", "dev", "--parallel", "2", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "in 3 stacks built in" in res.output and "on 2 processes" in res.output
    assert "(fleet stack dev-fleet)" in res.output
    docs = list(yaml.safe_load_all((tmp_path / "aws-use1.yaml").read_text()))
    assert any(d["metadata"]["name"] == "hybridml-fleet-directory" for d in docs)


def test_cli_monolithic_previews_the_whole_stack(tmp_path):
    from hybridml.cli import app

    res = CliRunner().invoke(app, ["preview", "dev", "--monolithic", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "resources built in" in res.output and "stacks" not in res.output.splitlines()[-2]
    assert (tmp_path / "dc-ashburn.yaml").exists()


def test_cli_unknown_site_exits_2():
    from hybridml.cli import app

    res = CliRunner().invoke(app, ["preview", "dev", "--sites", "nowhere"])
    assert res.exit_code == 2 and "nowhere" in res.output


def test_cli_failed_stack_exits_1(monkeypatch):
    import hybridml.ops.preview as preview_module
    from hybridml.cli import app

    real = preview_module.run_preview
    monkeypatch.setattr(preview_module, "run_preview",
                        lambda spec, **kw: (_ for _ in ()).throw(RuntimeError("boom"))
                        if kw.get("stack") == "dev-dc-ashburn" else real(spec, **kw))
    res = CliRunner().invoke(app, ["preview", "dev", "--parallel", "2"])
    assert res.exit_code == 1
    assert "stack dev-dc-ashburn: RuntimeError: boom" in res.output


@pytest.mark.slow
def test_prod_sharded_preview_matches_the_whole_prod_stack():
    from tests.pulumi_mocks import preview

    sharded = run_sharded_preview("prod", want_manifests=True)
    whole = preview("prod")
    assert not sharded.failed and len(sharded.stacks) == len(whole.sites) + 1
    assert sharded.count == whole.count + 3 * len(whole.sites)
    assert _by_cluster(sharded.manifests()) == _by_cluster(whole.kubernetes_manifests())
    print(f"\nprod sharded preview: {sharded.count} resources in {len(sharded.stacks)} stacks, "
          f"{sharded.build_seconds:.2f} s on {sharded.workers} processes = {sharded.resources_per_second:,.0f} "
          f"resources/s (whole stack, one process: {whole.resources_per_second:,.0f} resources/s)")


def test_a_stuck_stack_is_killed_and_reported_instead_of_hanging(monkeypatch):
    """A stack's process that ignores SIGTERM and never answers (as a forked child can, having inherited a
    handler or a lock) is killed after the timeout; the other site stacks finish; the fleet stack is not
    previewed without it."""
    import signal
    import time

    import hybridml.ops.preview as preview_module

    real = preview_module.run_preview

    def stuck(spec, **kw):
        if kw.get("stack") == "dev-aws-use1":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(120)
        return real(spec, **kw)

    monkeypatch.setattr(preview_module, "run_preview", stuck)
    started = time.monotonic()
    result = run_sharded_preview("dev", workers=2, stack_timeout=8)
    assert time.monotonic() - started < 60
    failed = {s.stack: s.error for s in result.failed}
    assert "no result within 8 s (stuck process killed)" in failed.pop("dev-aws-use1")
    assert "its site stacks failed (dev-aws-use1)" in failed.pop("dev-fleet")
    assert not failed
    assert {s.stack for s in result.stacks if not s.error} and all(s.count for s in result.stacks if not s.error)
