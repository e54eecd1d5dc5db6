"""Racks as Pulumi resources: the dynamic provider's diff, and the resources the component declares."""
from __future__ import annotations

import pulumi
import pytest

from datacenter.inventory import build_inventory
from datacenter.pulumi_racks import RackBootstrapProvider, rack_changes, rack_plan
from tests.datacenter.conftest import overrides


def props(inventory_hash="a" * 64, playbook_hash="b" * 64, **extra):
    return {"datacenter": "dc-local", "rack": "r1", "inventory_hash": inventory_hash, "playbook_hash": playbook_hash,
            "check": False, "inventory": {"datacenter": "dc-local"}, **extra}


def test_equal_hashes_mean_no_change_even_when_outputs_differ():
    olds = props(hosts={"r1-h01": {"status": "changed"}}, changed_hosts=["r1-h01"], duration_s=80.0)
    news = props(hosts=None, changed_hosts=None, duration_s=None)
    result = RackBootstrapProvider().diff("dc-local/r1", olds, news)
    assert result.changes is False
    assert result.replaces == []


@pytest.mark.parametrize("field", ["inventory_hash", "playbook_hash"])
def test_a_changed_hash_means_bootstrap_again_in_place(field):
    news = props(**{field: "c" * 64})
    result = RackBootstrapProvider().diff("dc-local/r1", props(), news)
    assert result.changes is True
    assert result.replaces == []
    assert rack_changes(props(), news) == [field]


def test_a_renamed_rack_is_replaced():
    result = RackBootstrapProvider().diff("dc-local/r1", props(), props(rack="r9"))
    assert result.changes is True
    assert result.replaces == ["rack"]


def test_rack_plan_hashes_each_rack_on_its_own(local_env, local_inventory):
    plan = dict(rack_plan(local_inventory, "p" * 64))
    assert list(plan) == ["r1", "r2"]
    assert plan["r1"]["inventory_hash"] != plan["r2"]["inventory_hash"]
    changed = dict(rack_plan(build_inventory(local_env, "dc-local", overrides(
        "racks: {r2: {vars: {node_exporter_disabled_collectors: [hwmon]}}}")), "p" * 64))
    # only r2 would be bootstrapped again by `pulumi up`
    provider = RackBootstrapProvider()
    assert provider.diff("dc-local/r1", plan["r1"], changed["r1"]).changes is False
    assert provider.diff("dc-local/r2", plan["r2"], changed["r2"]).changes is True
    # a role change concerns every rack
    new_playbook = dict(rack_plan(local_inventory, "q" * 64))
    assert all(provider.diff("x", plan[r], new_playbook[r]).changes for r in ("r1", "r2"))


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.resources = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def test_component_declares_one_resource_per_rack_in_rolling_order(local_inventory):
    from datacenter.pulumi_racks import DatacenterBootstrap, DatacenterBootstrapArgs

    mocks = _Mocks()
    pulumi.runtime.set_mocks(mocks, preview=False)

    @pulumi.runtime.test
    def check():
        dc = DatacenterBootstrap("dc-local", DatacenterBootstrapArgs(inventory=local_inventory, playbook_hash="p" * 64))

        def verify(ids):
            racks = [r for r in mocks.resources if r.typ == "pulumi-python:dynamic:Resource"]
            assert [r.name for r in racks] == ["dc-local-r1", "dc-local-r2"], [r.name for r in racks]
            r1 = racks[0].inputs
            assert r1["rack"] == "r1" and r1["playbook_hash"] == "p" * 64
            assert r1["inventory_hash"] == local_inventory.rack_fingerprint("r1")
            comp = [r for r in mocks.resources if r.typ == "hybridml:datacenter:DatacenterBootstrap"]
            assert len(comp) == 1, f"component missing: {[r.typ for r in mocks.resources]}"
            assert ids == ["dc-local-r1-id", "dc-local-r2-id"]

        return pulumi.Output.all(*[r.id for r in dc.racks.values()]).apply(verify)

    check()
