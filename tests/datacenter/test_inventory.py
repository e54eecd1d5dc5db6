"""Spec -> Ansible inventory: groups, host vars, determinism, overrides and their errors."""
from __future__ import annotations

import ast
import copy
import random
from pathlib import Path

import pytest
import yaml

from datacenter.inventory import (
    LABEL_DATACENTER,
    LABEL_PRIVACY_ZONE,
    LABEL_RACK,
    LABEL_REGION,
    LABEL_ZONE,
    Inventory,
    build_inventory,
    parse_overrides,
    system_reserved,
)
from infra.errors import SpecError
from infra.loader import parse_environment
from tests.datacenter.conftest import overrides

LOCAL_YAML = (Path(__file__).resolve().parents[2] / "infra" / "environments" / "local.yaml").read_text()


def test_groups_by_datacenter_rack_role_and_privacy_zone(local_inventory):
    data = local_inventory.to_ansible()["all"]["children"]
    dc = data["dc_local"]
    assert list(dc["children"]) == ["dc_local_rack_r1", "dc_local_rack_r2"]  # spec order = rolling order
    assert list(dc["children"]["dc_local_rack_r1"]["hosts"]) == ["r1-h01", "r1-h02", "r1-h03"]
    assert list(dc["children"]["dc_local_rack_r2"]["hosts"]) == ["r2-h01", "r2-h02", "r2-h03"]
    assert set(data["kube_node"]["hosts"]) == {f"r{r}-h0{h}" for r in (1, 2) for h in (1, 2, 3)}
    assert data["kube_control_plane"] == {}
    assert set(data["privacy_zone_pii"]["hosts"]) == {"r2-h01", "r2-h02", "r2-h03"}
    assert dc["vars"]["hybridml_datacenter"] == "dc-local"
    assert dc["vars"]["hybridml_network_zone"] == "wan-us-east"
    assert dc["children"]["dc_local_rack_r2"]["vars"] == {"hybridml_privacy_zone": "pii", "hybridml_rack": "r2"}


def test_host_vars_carry_labels_taints_and_network_settings(local_inventory):
    internal = local_inventory.host("r1-h02").vars
    assert internal["ansible_host"] == "10.77.1.12"
    assert internal["ansible_port"] == 22
    assert internal["kubernetes_node_ip"] == "10.77.1.12"
    assert internal["node_exporter_listen_address"] == "10.77.1.12:9100"
    assert internal["kubernetes_node_labels"] == {
        LABEL_REGION: "dc-local", LABEL_ZONE: "r1", LABEL_DATACENTER: "dc-local", LABEL_RACK: "r1",
        LABEL_PRIVACY_ZONE: "internal", "hybridml.io/network-zone": "wan-us-east"}
    assert internal["kubernetes_node_taints"] == []
    pii = local_inventory.host("r2-h03").vars
    assert pii["kubernetes_node_labels"][LABEL_PRIVACY_ZONE] == "pii"
    assert pii["kubernetes_node_labels"][LABEL_ZONE] == "r2"
    assert pii["kubernetes_node_taints"] == ["hybridml.io/privacy-zone=pii:NoSchedule"]


def test_restricted_racks_are_tainted_and_public_ones_are_not(local_env):
    text = LOCAL_YAML.replace("privacy_zone: pii", "privacy_zone: restricted").replace(
        "privacy_zone: internal", "privacy_zone: public")
    inv = build_inventory(parse_environment(text), "dc-local")
    assert inv.host("r2-h01").taints == ("hybridml.io/privacy-zone=restricted:NoSchedule",)
    assert inv.host("r1-h01").taints == ()


def test_system_reserved_follows_the_spec_fraction():
    # worked example of the sample inventory: 16 cores, 64 GiB, 10 % -> 1600m, 6554Mi
    assert system_reserved(16, 64, 0.1) == {"cpu": "1600m", "memory": "6554Mi"}
    assert system_reserved(1, 1, 0.0) == {"cpu": "100m", "memory": "256Mi"}  # floors


def test_rendering_is_deterministic(local_env):
    first = build_inventory(local_env, "dc-local").to_yaml()
    again = build_inventory(parse_environment(LOCAL_YAML), "dc-local").to_yaml()
    assert first == again
    # override keys in any order give the same file
    keys = [f"var_{i}: {i}" for i in range(12)]
    shuffled = keys[:]
    random.Random(7).shuffle(shuffled)
    a = build_inventory(local_env, "dc-local", parse_overrides("vars:\n" + "".join(f"  {k}\n" for k in keys)))
    b = build_inventory(local_env, "dc-local", parse_overrides("vars:\n" + "".join(f"  {k}\n" for k in shuffled)))
    assert a.to_yaml() == b.to_yaml()
    assert a.rack_fingerprint("r1") == b.rack_fingerprint("r1")


def test_inventory_yaml_is_what_ansible_reads(local_inventory):
    loaded = yaml.safe_load(local_inventory.to_yaml())
    assert loaded == local_inventory.to_ansible()


def test_fingerprint_changes_only_for_the_rack_that_changed(local_inventory, local_env):
    ov = overrides("""
        racks:
          r2:
            vars: {node_exporter_disabled_collectors: [hwmon]}
    """)
    changed = build_inventory(local_env, "dc-local", ov)
    assert changed.rack_fingerprint("r1") == local_inventory.rack_fingerprint("r1")
    assert changed.rack_fingerprint("r2") != local_inventory.rack_fingerprint("r2")
    # a datacenter-wide setting concerns every rack
    everywhere = build_inventory(local_env, "dc-local", overrides("vars: {kubernetes_node_max_pods: 64}"))
    assert everywhere.rack_fingerprint("r1") != local_inventory.rack_fingerprint("r1")
    assert everywhere.rack_fingerprint("r2") != local_inventory.rack_fingerprint("r2")


def test_overrides_set_connection_vars_and_add_hosts(local_env):
    ov = overrides("""
        datacenter: dc-local
        vars: {ansible_user: root}
        racks:
          r1: {vars: {rack_setting: 1}}
        hosts:
          r1-h01: {address: 192.168.50.11, ssh_port: 2222, vars: {host_setting: 2}}
        add_hosts:
          - {name: cp-01, rack: r1, address: 10.77.1.50, cores: 8, memory_gib: 32, role: control-plane}
    """)
    inv = build_inventory(local_env, "dc-local", ov)
    h = inv.host("r1-h01")
    assert (h.address, h.port, h.node_ip) == ("192.168.50.11", 2222, "10.77.1.11")  # node IP stays the spec's
    assert h.vars["host_setting"] == 2
    assert inv.vars["ansible_user"] == "root"
    assert inv.rack("r1").vars["rack_setting"] == 1
    assert inv.rack("r1").hosts[-1] == "cp-01"
    data = inv.to_ansible()["all"]["children"]
    assert list(data["kube_control_plane"]["hosts"]) == ["cp-01"]
    assert "cp-01" not in data["kube_node"]["hosts"]


# ---- bad input: (overrides file, field path, message fragment, line)
BAD_OVERRIDES = [
    ("add_hosts:\n  - {name: r1-h02, rack: r1, address: 10.77.1.99, cores: 4, memory_gib: 8}\n",
     "add_hosts[0].name", "duplicate host 'r1-h02'", 2),
    ("add_hosts:\n  - {name: x1, rack: r1, address: 10.77.1.90, cores: 4, memory_gib: 8}\n"
     "  - {name: x1, rack: r2, address: 10.77.2.90, cores: 4, memory_gib: 8}\n",
     "add_hosts[1].name", "duplicate host 'x1'", 3),
    ("add_hosts:\n  - {name: x1, rack: r1, address: 10.77.2.12, cores: 4, memory_gib: 8}\n",
     "add_hosts[0].address", "address 10.77.2.12 of host 'x1' clashes with host 'r2-h02'", 2),
    ("hosts:\n  r1-h01:\n    address: 10.77.1.12\n",
     "hosts.r1-h01.address", "clashes with host 'r1-h02'", 3),
    ("add_hosts:\n  - {name: x1, rack: r9, address: 10.77.9.1, cores: 4, memory_gib: 8}\n",
     "add_hosts[0].rack", "unknown rack 'r9'", 2),
    ("racks:\n  r3:\n    vars: {a: 1}\n", "racks.r3", "unknown rack 'r3'", 2),
    ("hosts:\n  r1-h07: {vars: {a: 1}}\n", "hosts.r1-h07", "unknown host 'r1-h07' in datacenter 'dc-local' "
     "(did you mean", 2),
    ("datacenter: dc-other\n", "datacenter", "not 'dc-local'", 1),
]


@pytest.mark.parametrize("text,path,fragment,line", BAD_OVERRIDES, ids=[b[1] for b in BAD_OVERRIDES])
def test_bad_overrides_name_the_field(local_env, text, path, fragment, line):
    ov = parse_overrides(text, "bad.yaml")
    with pytest.raises(SpecError) as info:
        build_inventory(local_env, "dc-local", ov)
    err = info.value
    assert err.file == "bad.yaml"
    paths = [i.dotted_path for i in err.issues]
    assert path in paths, err.render()
    issue = err.issues[paths.index(path)]
    assert fragment in issue.message
    assert issue.line == line
    assert f"bad.yaml:{line}: {path}: " in err.render()


SCHEMA_ERRORS = [
    ("hosts:\n  r1-h01: {adress: 10.0.0.1}\n", "hosts.r1-h01.adress", "unknown field 'adress'"),
    ("add_hosts:\n  - {name: x1, rack: r1, cores: 4, memory_gib: 8}\n", "add_hosts[0].address",
     "required field 'address' is missing"),
    ("add_hosts:\n  - {name: X_1, rack: r1, address: 10.77.1.90, cores: 4, memory_gib: 8}\n", "add_hosts[0].name",
     "should match pattern"),
    ("hosts:\n  r1-h01: {address: 10.77.1.300}\n", "hosts.r1-h01.address", "IPv4"),
    ("vars: {'bad-name': 1}\n", "vars.bad-name", "not a valid Ansible variable name"),
    ("vars: [1, 2]\n", "vars", "dictionary"),
]


@pytest.mark.parametrize("text,path,fragment", SCHEMA_ERRORS, ids=[s[1] for s in SCHEMA_ERRORS])
def test_malformed_overrides_name_the_field(text, path, fragment):
    with pytest.raises(SpecError) as info:
        parse_overrides(text, "bad.yaml")
    paths = [i.dotted_path for i in info.value.issues]
    assert path in paths, info.value.render()
    assert fragment in info.value.issues[paths.index(path)].message


def test_not_yaml_is_a_spec_error_with_a_line():
    with pytest.raises(SpecError, match="not valid YAML") as info:
        parse_overrides("vars:\n  a: [1, 2\n", "bad.yaml")
    assert info.value.issues[0].line is not None


def test_unknown_datacenter(local_env):
    with pytest.raises(SpecError, match="no datacenter 'dc-nowhere'") as info:
        build_inventory(local_env, "dc-nowhere")
    assert "dc-local" in info.value.render()


def test_limit_selects_hosts_racks_groups_and_globs(local_inventory):
    inv = local_inventory
    assert inv.select(None) == inv.host_names
    assert inv.select(["r2"]) == ["r2-h01", "r2-h02", "r2-h03"]
    assert inv.select("r1-h02,r2-h01") == ["r1-h02", "r2-h01"]
    assert inv.select(["dc_local_rack_r1", "!r1-h03"]) == ["r1-h01", "r1-h02"]
    assert inv.select(["*-h03"]) == ["r1-h03", "r2-h03"]
    assert inv.select(["!r1"]) == ["r2-h01", "r2-h02", "r2-h03"]
    assert inv.select(["privacy_zone_pii"]) == ["r2-h01", "r2-h02", "r2-h03"]
    with pytest.raises(SpecError) as info:
        inv.select(["r1", "r9-h01"])
    assert info.value.issues[0].dotted_path == "limit[1]"


def test_batches_are_racks_in_spec_order(local_inventory):
    assert local_inventory.batches() == [["r1-h01", "r1-h02", "r1-h03"], ["r2-h01", "r2-h02", "r2-h03"]]
    assert local_inventory.batches(["r2-h02", "r1-h03"]) == [["r1-h03"], ["r2-h02"]]
    assert local_inventory.play_vars() == {"hybridml_bootstrap_hosts": "dc_local", "hybridml_serial": [3, 3],
                                           "hybridml_max_fail_percentage": 34}
    assert local_inventory.play_vars(["r2-h01"])["hybridml_serial"] == [1]


def test_round_trips_through_plain_data(local_env):
    inv = build_inventory(local_env, "dc-local", overrides("vars: {a: {b: [1, 2]}}"))
    assert Inventory.from_data(inv.to_data()) == inv
    assert Inventory.from_data(copy.deepcopy(inv.to_data())).to_yaml() == inv.to_yaml()


def test_inventory_module_is_pure():
    """Inventory generation imports no Pulumi, no Ansible, nothing that does IO on its own."""
    source = (Path(__file__).resolve().parents[2] / "datacenter" / "inventory.py").read_text()
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "fnmatch", "hashlib", "ipaddress", "json", "re", "dataclasses", "typing",
                        "yaml", "pydantic", "infra", "difflib"}, imported
    calls = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not calls & {"open", "print", "exec", "eval"}
