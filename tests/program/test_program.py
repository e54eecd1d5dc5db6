"""The program body: site selection (sharding), stable names, provider wiring, exports, plan files."""
from __future__ import annotations

import copy
from collections import Counter

import pytest

from hybridml.program import ProgramSettings, load_plan, select_sites, site_summary
from infra.errors import SpecError
from infra.loader import load_environment, parse_environment
from policies.placement import solve
from tests.conftest import SMALL_SPEC, dump
from tests.pulumi_mocks import preview, where


@pytest.fixture(scope="module")
def dev_env_plan():
    env = load_environment("dev")
    return env, solve(env)


def test_default_sites_are_the_ones_the_plan_uses(dev_env_plan):
    env, plan = dev_env_plan
    assert select_sites(env, plan, None) == [s.name for s in env.sites if s.name in plan.used_sites()]


def test_a_shard_builds_only_its_sites_in_spec_order(dev_env_plan):
    env, plan = dev_env_plan
    assert select_sites(env, plan, ("dc-ashburn", "aws-use1")) == ["aws-use1", "dc-ashburn"]


def test_unknown_site_names_the_config_key_and_the_known_sites(dev_env_plan):
    env, plan = dev_env_plan
    with pytest.raises(SpecError) as info:
        select_sites(env, plan, ("aws-use9",))
    (issue,) = info.value.issues
    assert issue.path == ("hybridml:sites",)
    assert "aws-use9" in issue.message and "aws-use1" in issue.message


def test_plan_file_must_match_the_environment(tmp_path, dev_env_plan):
    env, plan = dev_env_plan
    good = tmp_path / "plan.json"
    good.write_text(plan.model_dump_json())
    assert load_plan(env, str(good)).decisions() == plan.decisions()
    other = parse_environment(dump(copy.deepcopy(SMALL_SPEC)))
    with pytest.raises(SpecError, match="plan is for environment 'dev'"):
        load_plan(other, str(good))


def test_urns_are_unique_and_stable_across_runs():
    first = preview("dev")
    second = preview("dev", stack="preview-dev-again")   # a second, uncached run
    dupes = [u for u, n in Counter(r.urn for r in first.resources).items() if n > 1]
    assert not dupes, dupes
    def strip(urn):
        return urn.split("::", 2)[2]   # drop urn:pulumi:<stack>::<project>
    assert sorted(strip(r.urn) for r in first.resources) == sorted(strip(r.urn) for r in second.resources)
    assert all("::hybridml::" in r.urn for r in first.resources)


def test_every_kubernetes_object_goes_to_the_cluster_of_its_site():
    result = preview("dev")
    checked = 0
    for r in result.resources:
        if not r.type.startswith("kubernetes:") or r.type.startswith("pulumi:providers:"):
            continue
        site = result.cluster_of_provider.get(r.provider_urn)
        assert site is not None, f"{where(r)} uses no cluster provider ({r.provider!r})"
        owner = result._component_site.get(r.urn)
        if owner is not None:   # objects of a cluster component: its own provider
            assert site == owner, where(r)
        assert r.name.startswith(site + "-") or owner is None, where(r)
        checked += 1
    assert checked > 30


def test_a_site_shard_builds_exactly_the_whole_stacks_objects_of_its_site():
    whole = preview("dev")
    shard = preview("dev", sites=("dc-ashburn",))
    assert shard.workloads_deployed and shard.sites == ["dc-ashburn"]

    def objects(result, site):
        return {r.urn: r.props for r in result.resources
                if r.type.startswith("kubernetes:") and result.cluster_of_provider.get(r.provider_urn) == site}

    mine = objects(shard, "dc-ashburn")
    theirs = objects(whole, "dc-ashburn")
    # The whole stack also writes the fleet directory (the fleet stack does that for shards).
    directory = {k for k in theirs if k.endswith("-fleet-directory")}
    assert len(directory) == 1
    assert set(mine) == set(theirs) - directory
    assert all(mine[k] == theirs[k] for k in mine)
    assert len(mine) > 50
    # the cluster component's tree too: same URNs in a shard, so a site moves between stacks without replacement
    cluster_tree = sorted(r.urn for r in whole.resources if whole._component_site.get(r.urn) == "dc-ashburn")
    assert cluster_tree and cluster_tree == sorted(r.urn for r in shard.resources
                                                   if shard._component_site.get(r.urn) == "dc-ashburn")
    assert not any(r.type.startswith("aws:") for r in shard.resources)
    assert not objects(shard, "aws-use1")
    assert shard.exports["role"] == "site" and whole.exports["role"] == "environment"
    assert shard.exports["plan_digest"] == whole.exports["plan_digest"]
    member = shard.exports["fleet_members"]["dc-ashburn"]
    assert member["kind"] == "datacenter" and member["pipelines"] > 0 and member["fleet_hostname"]


def test_exports_summarise_what_runs_where(dev_env_plan):
    env, plan = dev_env_plan
    result = preview("dev")
    assert set(result.exports) >= {"environment", "mode", "sites"}
    for site in result.sites:
        summary = site_summary(env, plan, site, "cloud")
        assert summary["pipelines"] == dict(sorted(plan.site(site).pipelines.items()))
        assert summary["simulated"] is False


def test_settings_from_config_defaults():
    import pulumi
    from pulumi.runtime import config as runtime_config

    runtime_config.set_all_config({"hybridml:spec": "dev"})
    s = ProgramSettings.from_config(pulumi.Config("hybridml"))
    assert (s.mode, s.sites, s.local_kubeconfig, s.plan_file) == ("cloud", None, ".local/kubeconfig", None)
    runtime_config.set_all_config({"hybridml:spec": "dev", "hybridml:mode": "bogus"})
    with pytest.raises(SpecError, match="must be local or cloud"):
        ProgramSettings.from_config(pulumi.Config("hybridml"))
