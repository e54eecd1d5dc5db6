"""The shipped program bootstraps racks when the stack config says so (hybridml:bootstrapRacks), under mocks.

What the engine does with those resources (create, skip, update one rack) is tests/datacenter/test_pulumi_racks_real.py.
"""
from __future__ import annotations

import json

import pulumi
import pytest
from pulumi.runtime import config as runtime_config

from hybridml.program import ProgramSettings, rack_overrides_for
from infra.errors import SpecError
from infra.loader import load_environment
from tests.pulumi_mocks import preview

DYNAMIC = "pulumi-python:dynamic:Resource"


@pytest.fixture(scope="module")
def overrides_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("racks") / "overrides.yaml"
    path.write_text("datacenter: dc-local\nvars: {ansible_user: root}\nhosts: {r2-h02: {vars: {rack_note: x}}}\n")
    return str(path)


def _racks_preview(overrides_file: str):
    return preview("local", mode="local", config=(("hybridml:bootstrapRacks", "true"),
                                                  ("hybridml:rackOverrides", json.dumps({"dc-local": overrides_file}))))


def test_one_rack_resource_per_rack_chained_and_the_datacenter_workloads_wait_for_the_last(overrides_file):
    result = _racks_preview(overrides_file)
    racks = {r.name: r for r in result.resources if r.type == DYNAMIC}
    assert sorted(racks) == ["dc-local-racks-r1", "dc-local-racks-r2"]
    r1, r2 = racks["dc-local-racks-r1"], racks["dc-local-racks-r2"]
    assert r1.urn in r2.dependencies and r2.urn not in r1.dependencies   # serial per rack, in spec order
    assert r1.props["rack"] == "r1" and r1.props["datacenter"] == "dc-local"
    assert r1.props["inventory_hash"] != r2.props["inventory_hash"]
    objects = result.kubernetes_objects()
    workloads = [r for r in objects["dc-local"] if result._component_site.get(r.urn) is None]
    assert len(workloads) > 20 and all(r2.urn in r.dependencies for r in workloads), \
        [r.urn for r in workloads if r2.urn not in r.dependencies][:5]
    # the cluster's own baseline and the cloud site do not wait for the racks
    baseline = [r for r in objects["dc-local"] if result._component_site.get(r.urn) == "dc-local"]
    assert baseline and not any(r2.urn in r.dependencies for r in baseline)
    assert objects["aws-use1"] and not any(r2.urn in r.dependencies for r in objects["aws-use1"])
    assert result.exports["racks"]["dc-local"].keys() == {"r1", "r2"}


def test_without_the_key_no_rack_is_bootstrapped():
    result = preview("local", mode="local")
    assert not [r for r in result.resources if r.type == DYNAMIC]
    assert "racks" not in result.exports


def _settings(**config: str) -> ProgramSettings:
    runtime_config.set_all_config({"hybridml:spec": "local", **{f"hybridml:{k}": v for k, v in config.items()}})
    return ProgramSettings.from_config(pulumi.Config("hybridml"))


def test_settings_parse_and_reject_bad_values():
    s = _settings(bootstrapRacks="true", rackOverrides='{"dc-local": "o.yaml"}')
    assert s.bootstrap_racks and s.rack_overrides == {"dc-local": "o.yaml"}
    assert not _settings().bootstrap_racks
    with pytest.raises(SpecError, match="bootstrapRacks: must be true or false"):
        _settings(bootstrapRacks="yes")
    with pytest.raises(SpecError, match="rackOverrides: must map datacenter names"):
        _settings(rackOverrides='["o.yaml"]')


def test_overrides_for_an_unknown_datacenter_name_the_key_and_the_known_ones():
    env = load_environment("local")
    settings = ProgramSettings(spec="local", bootstrap_racks=True, rack_overrides={"dc-nowhere": "o.yaml"})
    with pytest.raises(SpecError) as info:
        rack_overrides_for(env, ["aws-use1", "dc-local"], settings)
    (issue,) = info.value.issues
    assert issue.path == ("hybridml:rackOverrides", "dc-nowhere") and "dc-local" in issue.message
    # only the datacenters this stack builds; cloud sites have no racks
    ok = ProgramSettings(spec="local", bootstrap_racks=True)
    assert rack_overrides_for(env, ["aws-use1", "dc-local"], ok) == {"dc-local": None}
    assert rack_overrides_for(env, ["aws-use1"], ok) == {}


def test_a_missing_overrides_file_names_the_key_and_how_to_make_it(tmp_path):
    from hybridml.ops.preview import run_preview

    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(SpecError) as info:
        run_preview("local", mode="local", config={"hybridml:bootstrapRacks": "true",
                                                    "hybridml:rackOverrides": json.dumps({"dc-local": missing})})
    (issue,) = info.value.issues
    assert issue.path == ("hybridml:rackOverrides", "dc-local")
    assert missing in issue.message and "testhosts.py up" in issue.message


def test_the_stack_fingerprint_covers_the_overrides_files(tmp_path):
    """A preview may skip a stack whose inputs fingerprint is unchanged: a changed host var must change it."""
    from hybridml.stack import fingerprint

    (tmp_path / "o.yaml").write_text("vars: {a: 1}\n")
    config = {"hybridml:spec": "local", "hybridml:rackOverrides": json.dumps({"dc-local": "o.yaml"})}
    files, _ = fingerprint.program_inputs(tmp_path, config)
    assert files["hybridml:rackOverrides.dc-local=o.yaml"] == b"vars: {a: 1}\n"
    (tmp_path / "o.yaml").write_text("vars: {a: 2}\n")
    assert fingerprint.program_inputs(tmp_path, config)[0] != files
