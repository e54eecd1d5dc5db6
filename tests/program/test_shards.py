"""Sharding an environment into site stacks + a fleet stack (hybridml/ops/shards.py) and the fleet directory
they publish (workloads/render/fleet.py): pure logic, no engine."""
from __future__ import annotations

import json

import pytest
import yaml

from hybridml.ops.shards import (
    ShardError,
    StackSpec,
    blocked_by,
    checkpoint_mode,
    fleet_stack_name,
    largest_first,
    select,
    stack_specs,
    transient_error,
    waves,
    whole_stack_spec,
)
from hybridml.ops.stack_state import stale_locks
from hybridml.stack.config import ConfigEntry, StackConfigError, parse_stack_config_yaml
from tests.conftest import REPO
from workloads.render import fleet

USED = ["aws-use1", "aws-usw2", "dc-ashburn"]
ALL = ["aws-use1", "aws-usw2", "aws-euw1", "dc-ashburn"]
BASE = {"hybridml:spec": ConfigEntry("infra/environments/prod.yaml"), "hybridml:mode": ConfigEntry("cloud"),
        "hybridml:secretSeed": ConfigEntry("s3cr3t", secret=True),
        # shard keys in the environment's own config must not leak into every shard
        "hybridml:sites": ConfigEntry('["aws-use1"]')}


def specs(selected=None, **kw):
    return stack_specs("prod", USED, select(USED, ALL, selected), ".local/plans/prod.json", BASE, **kw)


def test_one_site_stack_per_used_site_then_the_fleet_stack():
    out = specs()
    assert [s.name for s in out] == ["prod-aws-use1", "prod-aws-usw2", "prod-dc-ashburn", "prod-fleet"]
    site = out[0]
    assert site.role == "site" and site.sites == ("aws-use1",)
    assert json.loads(site.config["hybridml:sites"].value) == ["aws-use1"]
    assert site.config["hybridml:plan"].value == ".local/plans/prod.json"
    # every stack inherits the environment's config, secrets stay secret
    assert site.config["hybridml:secretSeed"] == ConfigEntry("s3cr3t", secret=True)
    fleet_spec = out[-1]
    assert fleet_spec.role == "fleet" and fleet_spec.config["hybridml:role"].value == "fleet"
    assert "hybridml:sites" not in fleet_spec.config
    assert json.loads(fleet_spec.config["hybridml:siteStacks"].value) == {s: f"prod-{s}" for s in USED}
    assert set(fleet_spec.after) == {"prod-aws-use1", "prod-aws-usw2", "prod-dc-ashburn"}


def test_waves_run_sites_in_parallel_before_the_fleet_and_destroy_in_reverse():
    out = specs()
    up = waves(out, "up")
    assert [[s.name for s in w] for w in up] == [["prod-aws-use1", "prod-aws-usw2", "prod-dc-ashburn"], ["prod-fleet"]]
    assert [[s.name for s in w] for w in waves(out, "destroy")][0] == ["prod-fleet"]
    assert waves(out, "preview") == up


def test_the_biggest_site_stacks_start_first_and_the_fleet_still_waits():
    ordered = largest_first(specs(), {"aws-use1": 3, "aws-usw2": 40, "dc-ashburn": 12})
    assert [s.name for s in ordered][:3] == ["prod-aws-usw2", "prod-dc-ashburn", "prod-aws-use1"]
    first, second = waves(ordered, "up")
    assert [s.name for s in first] == ["prod-aws-usw2", "prod-dc-ashburn", "prod-aws-use1"]
    assert [s.name for s in second] == ["prod-fleet"]


@pytest.mark.parametrize(("requested", "expected"), [
    ("auto", "every-step"), ("every-step", "every-step"), ("final", "final")])
def test_checkpoints_every_step_unless_final_is_asked_for(requested, expected):
    assert checkpoint_mode(requested) == expected


def test_an_unknown_checkpoint_policy_is_refused():
    with pytest.raises(ShardError, match="must be one of auto, every-step, final"):
        checkpoint_mode("sometimes")


def test_only_locks_of_dead_processes_on_this_host_are_stale():
    locks = {"a.json": {"pid": 11, "hostname": "vm"}, "b.json": {"pid": 12, "hostname": "vm"},
             "c.json": {"pid": 11, "hostname": "ci-runner-7"}, "d.json": {"hostname": "vm"}}
    assert stale_locks(locks, "vm", alive=lambda pid: pid == 12) == ["a.json"]
    assert stale_locks(locks, "vm", alive=lambda pid: True) == []


@pytest.mark.parametrize("message, transient", [
    # the sim fleet's two failed datacenter stacks, CPU-starved API servers
    ('kubernetes:core/v1:ResourceQuota ... failed: Internal error occurred: resource quota evaluation timed out', True),
    ("etcdserver: request timed out", True),
    ("Get https://127.0.0.1:41234/api/v1/namespaces: net/http: TLS handshake timeout", True),
    ("the server is currently unable to handle the request (get deployments.apps)", True),
    # a cluster that is down, a conflict, a bad object: running again changes nothing
    ("dial tcp 127.0.0.1:41234: connect: connection refused", False),
    ("Server-Side Apply field conflict detected", False),
    ('admission webhook denied the request: spec.replicas: Invalid value: -1', False),
])
def test_only_errors_of_an_overloaded_control_plane_are_run_again(message, transient):
    assert transient_error(message) is transient


def test_a_partial_rollout_still_refreshes_the_fleet_from_every_site():
    out = specs(["dc-ashburn"])
    assert [s.name for s in out] == ["prod-dc-ashburn", "prod-fleet"]
    assert len(json.loads(out[-1].config["hybridml:siteStacks"].value)) == 3
    # the fleet waits only for the stacks of this rollout
    assert [[s.name for s in w] for w in waves(out, "up")] == [["prod-dc-ashburn"], ["prod-fleet"]]


def test_unknown_sites_and_a_site_called_fleet_are_refused():
    with pytest.raises(ShardError, match="no site 'aws-mars'"):
        select(USED, ALL, ["aws-mars"])
    with pytest.raises(ShardError, match="may not be called 'fleet'"):
        stack_specs("prod", ["fleet"], ["fleet"], "p.json", BASE)
    with pytest.raises(ShardError, match="not a valid Pulumi stack name"):
        stack_specs("prod", ["a site"], ["a site"], "p.json", BASE)


def test_a_failed_dependency_skips_its_dependents_only():
    out = specs()
    assert blocked_by(out[-1], {"prod-aws-usw2"}) == ["prod-aws-usw2"]
    assert blocked_by(out[0], {"prod-aws-usw2"}) == []


def test_dependency_cycles_are_reported():
    a = StackSpec("a", "site", ("a",), after=("b",))
    b = StackSpec("b", "site", ("b",), after=("a",))
    with pytest.raises(ShardError, match="cycle"):
        waves([a, b], "up")


def test_the_whole_environment_stack_leaves_the_users_config_alone():
    whole = whole_stack_spec("prod")
    assert whole.name == "prod" and whole.config == {} and fleet_stack_name("prod") == "prod-fleet"


def test_shipped_stack_configs_parse_and_mark_secrets():
    for env in ("local", "dev", "prod"):
        entries = parse_stack_config_yaml(yaml.safe_load((REPO / f"Pulumi.{env}.yaml").read_text()), env)
        assert entries["hybridml:spec"].value.endswith(f"{env}.yaml")
    doc = {"config": {"hybridml:seed": {"secure": "v1:abc"}, "hybridml:ctx": {"a": "b"}, "hybridml:on": True}}
    entries = parse_stack_config_yaml(doc, "x")
    assert entries["hybridml:seed"].secret and not entries["hybridml:seed"].value
    assert json.loads(entries["hybridml:ctx"].value) == {"a": "b"}
    assert entries["hybridml:on"].value == "true"
    with pytest.raises(StackConfigError, match="Pulumi.bad.yaml: not a mapping"):
        parse_stack_config_yaml(["x"], "Pulumi.bad.yaml")


def _member(site, digest, **kw):
    return fleet.member(site, "cloud", digest, {"hostnames": [f"us-east.{site}.example"], "fleet_hostname":
                                                 f"{site}.fleet.example", "entry_for": ["us-east"],
                                                 "pipelines": {"a": {"replicas": 2}, "b": {"replicas": 3}}},
                        kubeconfig="apiVersion: v1 # secret", context="ctx", **kw)


def test_the_fleet_directory_lists_every_site_without_credentials():
    content = fleet.directory("prod", "d1", {"b": _member("b", "d1"), "a": _member("a", "d1")})
    assert list(content["sites"]) == ["a", "b"]
    assert content["sites"]["a"] == {"kind": "cloud", "hostnames": ["us-east.a.example"],
                                     "fleet_hostname": "a.fleet.example", "entry_for": ["us-east"], "pipelines": 2,
                                     "replicas": 5}
    rendered = fleet.render(content)
    assert "secret" not in rendered and "ctx" not in rendered
    cm = fleet.config_map("hybridml-gateway", "d1", rendered)
    assert cm["metadata"]["labels"][fleet.PLAN_DIGEST_LABEL] == "d1"
    assert json.loads(cm["data"][fleet.KEY]) == content


def test_counts_read_back_by_stack_reference_render_as_integers():
    # a stack reference hands numbers back as protobuf doubles: the directory must not depend on the layout
    by_reference = {**_member("a", "d1"), "pipelines": 2.0, "replicas": 5.0}
    direct = fleet.directory("prod", "d1", {"a": _member("a", "d1")})
    assert fleet.render(fleet.directory("prod", "d1", {"a": by_reference})) == fleet.render(direct)
    assert '"replicas": 5\n' in fleet.render(direct)


def test_sites_deployed_from_another_plan_block_the_directory():
    with pytest.raises(fleet.FleetMismatch, match=r"b \(d0\).*hybridml up prod"):
        fleet.directory("prod", "d1", {"a": _member("a", "d1"), "b": _member("b", "d0")})
    with pytest.raises(fleet.FleetMismatch, match="no plan"):
        fleet.directory("prod", "d1", {"a": {"site": "a"}})


def test_the_plan_digest_names_the_decision_not_the_run():
    from infra.loader import load_environment
    from policies.placement import solve

    env = load_environment("local")
    first, second = solve(env), solve(env)
    assert first.digest() == second.digest()                # timings differ, the decision does not
    moved = first.model_copy(deep=True)
    moved.pipelines[0].replicas = {k: v + 1 for k, v in moved.pipelines[0].replicas.items()}
    assert moved.digest() != first.digest()
