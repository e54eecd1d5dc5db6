"""Every class of malformed input ends in exit code 2 with `file:line: field path: reason` (issue 17), never a
traceback; and the well-formed neighbour of each still validates. Cases edit the shipped local spec as text,
so each expected line is the line of the edit."""
from __future__ import annotations

import time

import pytest
from pydantic import model_validator
from typer.testing import CliRunner

from hybridml.cli import app
from infra import limits
from infra.errors import SpecError
from infra.loader import parse_environment, parse_model
from infra.spec import StrictModel
from tests.conftest import REPO

LOCAL = (REPO / "infra" / "environments" / "local.yaml").read_text()
DESCRIPTION = next(line for line in LOCAL.splitlines() if line.startswith("description:"))


def edit(old: str, new: str, text: str = LOCAL) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def line_of(text: str, needle: str, nth: int = 0) -> int:
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return hits[nth]


def validate(tmp_path, content: str | bytes, name: str = "bad.yaml") -> tuple[int, str, str]:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.exit_code, result.output, str(path)


def assert_issue(tmp_path, content: str | bytes, line: int | None, field: str, *reasons: str) -> str:
    code, output, file = validate(tmp_path, content)
    where = f"{file}:{line}" if line is not None else file
    wanted = f"  {where}: {field}: "
    hits = [row for row in output.splitlines() if row.startswith(wanted)]
    assert code == 2, output
    assert hits, f"no line starting {wanted!r} in:\n{output}"
    assert any(all(r in hit for r in reasons) for hit in hits), f"{reasons} not in {hits}"
    return output


def assert_valid(tmp_path, content: str | bytes) -> None:
    code, output, _ = validate(tmp_path, content, "good.yaml")
    assert code == 0, output
    assert output.startswith("ok ")


# --------------------------------------------------------------------------- bytes and size


def test_not_utf8_names_byte_offset_and_line(tmp_path):
    data = LOCAL.encode().replace(b"Embedded default.", b"Embedded \xff default.")
    offset = data.index(b"\xff")
    line = line_of(LOCAL, "Embedded default.")
    assert_issue(tmp_path, data, line, "<root>", f"not UTF-8: byte 0xff at byte offset {offset} (line {line}, column 23)")


def test_utf16_gets_a_hint(tmp_path):
    assert_issue(tmp_path, LOCAL.encode("utf-16"), 1, "<root>", "not UTF-8", "UTF-16 byte-order mark")


def test_utf8_with_accents_and_bom_is_fine(tmp_path):
    text = edit("Embedded default.", "Embedded default — Zürich, 東京.")
    assert_valid(tmp_path, text)
    assert_valid(tmp_path, b"\xef\xbb\xbf" + text.encode())


def test_control_character_has_line_and_column(tmp_path):
    text = edit("Embedded default.", "Embedded\x07default.")
    assert_issue(tmp_path, text, line_of(text, "Embedded"), "<root>", "control character U+0007 at line 5, column 22")


@pytest.mark.parametrize("content,reason", [
    ("", "the file is empty: expected the spec"),
    ("   \n\n", "the file is empty"),
    ("# only a comment\n", "holds no YAML document (only comments)"),
])
def test_empty_file(tmp_path, content, reason):
    assert_issue(tmp_path, content, 1, "<root>", reason)


def test_file_over_the_size_limit(tmp_path):
    big = LOCAL + "# " + "x" * limits.MAX_INPUT_BYTES + "\n"
    out = assert_issue(tmp_path, big, None, "<root>", "larger than 16.0 MiB, the limit for an input file")
    assert "16.0 MiB" in out


def test_text_over_the_size_limit(monkeypatch):
    monkeypatch.setattr(limits, "MAX_INPUT_BYTES", 1000)
    with pytest.raises(SpecError) as info:
        parse_environment(LOCAL, "inline.yaml")
    assert "larger than 1,000 bytes" in info.value.issues[0].message


def test_a_file_at_the_limit_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_INPUT_BYTES", len(LOCAL.encode()))
    assert_valid(tmp_path, LOCAL)


# --------------------------------------------------------------------------- YAML that expands or nests


LAUGHS = "name: x\nlol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10))


def test_billion_laughs_stops_early(tmp_path):
    t0 = time.perf_counter()
    # lol4 stands for 111,111 nodes: the fourth alias of it in lol5 (line 7) passes the limit
    out = assert_issue(tmp_path, LAUGHS, 7, "lol5[3]", f"expands to more than {limits.MAX_YAML_NODES:,} nodes")
    assert time.perf_counter() - t0 < 5, "the expansion was not stopped while composing"
    assert "required field" not in out  # refused before any model saw the data


def test_merge_key_laughs_stop_too(tmp_path):
    text = "a0: &a0 {" + ", ".join(f"k{j}: v" for j in range(10)) + "}\n" + "".join(
        f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 10)}]}}\n" for i in range(1, 8))
    assert_issue(tmp_path, text, 6, "a5", "expands to more than")


def test_anchors_and_aliases_within_limits_are_fine(tmp_path):
    text = edit("gpu: {type: L4, count: 1, memory_gib: 24}, hourly_usd: 0.805",
                "gpu: &l4 {type: L4, count: 1, memory_gib: 24}, hourly_usd: 0.805")
    assert_valid(tmp_path, edit("gpu: {type: L4, count: 4, memory_gib: 24}", "gpu: {<<: *l4, count: 4}", text))


def test_recursive_alias(tmp_path):
    assert_issue(tmp_path, "name: x\nloop: &a [1, *a]\n", 2, "loop[1]", "alias *a is part of the node it names")


def test_absurd_nesting_block(tmp_path):
    text = "name: x\nd:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(40))
    # the mapping under d.k0...k30 is the 33rd level (the top mapping is the first); it starts at k31's line
    deepest = "d." + ".".join(f"k{i}" for i in range(limits.MAX_YAML_DEPTH - 1))
    assert_issue(tmp_path, text, line_of(text, f" k{limits.MAX_YAML_DEPTH - 1}:"), deepest,
                 f"the YAML nests more than {limits.MAX_YAML_DEPTH} levels deep")


def test_absurd_nesting_flow(tmp_path):
    text = "name: x\nd: " + "[" * 5000 + "]" * 5000 + "\n"
    assert_issue(tmp_path, text, 2, "d", f"the YAML nests more than {limits.MAX_YAML_DEPTH} levels deep")


def test_nesting_up_to_the_limit_is_fine():
    from infra.loader import _parse_yaml

    def nested(levels: int) -> str:  # `levels` mappings, one inside the other
        return "".join(" " * i + f"k{i}:\n" for i in range(levels))

    data, lines = _parse_yaml(nested(limits.MAX_YAML_DEPTH), "deep.yaml")
    assert len(lines) == limits.MAX_YAML_DEPTH + 1  # the root and one key per level
    with pytest.raises(SpecError, match="nests more than"):
        _parse_yaml(nested(limits.MAX_YAML_DEPTH + 1), "deep.yaml")


# --------------------------------------------------------------------------- duplicate keys


def test_duplicate_key_names_both_lines(tmp_path):
    text = edit("    capacity_rps: 6\n", "    capacity_rps: 6\n    capacity_rps: 60\n")
    first = line_of(text, "capacity_rps: 6")
    assert_issue(tmp_path, text, first + 1, "pipelines[0].capacity_rps",
                 f"duplicate key 'capacity_rps' (first at line {first}, again at line {first + 1})")


def test_duplicate_top_level_key(tmp_path):
    text = edit("description: Embedded default.", "description: Embedded default.\nname: other")
    assert_issue(tmp_path, text, line_of(text, "name: other"), "name",
                 f"duplicate key 'name' (first at line {line_of(text, 'name: local')}")


def test_same_key_in_different_mappings_is_fine(tmp_path):
    assert_valid(tmp_path, LOCAL)  # `name:` appears in every site, rack and pipeline


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN"])
def test_non_finite_numbers(tmp_path, value):
    text = edit("    capacity_rps: 6\n", f"    capacity_rps: {value}\n")
    assert_issue(tmp_path, text, line_of(text, "capacity_rps: "), "pipelines[0].capacity_rps", "finite number")


def test_non_finite_rtt(tmp_path):
    text = edit("us-east: {aws-use1: 8, dc-local: 12}", "us-east: {aws-use1: .nan, dc-local: 12}")
    assert_issue(tmp_path, text, line_of(text, "aws-use1: .nan"), "network.user_rtt_ms.us-east.aws-use1", "finite number")


@pytest.mark.parametrize("old,new,field,reason", [
    ("first_address: 10.77.1.11, cores: 16", "first_address: 10.77.1.11, cores: 1000000000000000000000000000000",
     "sites[1].racks[0].host_pools[0].cores", "less than or equal to 4096 (got an integer of 100 bits)"),
    ("hourly_usd: 0.805, max_nodes: 4", "hourly_usd: 1e300, max_nodes: 4",
     "sites[0].instance_types[0].hourly_usd", "less than or equal to 1000000000"),
    ("hourly_usd: 0.805, max_nodes: 4", "hourly_usd: 0.805, max_nodes: 40000000",
     "sites[0].instance_types[0].max_nodes", "less than or equal to 1000000"),
    ("    min_replicas: 1\n    dependencies: [{collection", "    min_replicas: 1000000\n    dependencies: [{collection",
     "pipelines[0].min_replicas", "less than or equal to 100000"),
])
def test_out_of_range_numbers(tmp_path, old, new, field, reason):
    text = edit(old, new)
    assert_issue(tmp_path, text, line_of(text, new.strip().splitlines()[0]), field, reason)


def test_integer_too_long_to_read(tmp_path):
    text = edit("    capacity_rps: 6\n", "    capacity_rps: " + "9" * 5000 + "\n")
    assert_issue(tmp_path, text, line_of(text, "capacity_rps: 99"), "pipelines[0].capacity_rps", "cannot read", "digits")


def test_replicas_a_pipeline_would_need(tmp_path):
    text = edit("    capacity_rps: 6\n", "    capacity_rps: 0.00001\n")
    assert_issue(tmp_path, text, line_of(text, "demand_rps: {us-east: 6"), "pipelines[0].demand_rps",
                 "demand 9 rps over capacity_rps 1e-05 x target_utilization 0.7 needs 1,285,714 replicas; "
                 "the limit is 100,000 per pipeline")


def test_hosts_of_the_fleet(tmp_path):
    pools = "".join(f"          - {{count: 512, name_prefix: p{i}-h, first_address: 10.{100 + i // 100}.{i % 100 * 2}.1, "
                    "cores: 16, memory_gib: 64}\n" for i in range(200))
    text = edit("          - {count: 3, name_prefix: r1-h, first_address: 10.77.1.11, cores: 16, memory_gib: 64}\n", pools)
    assert_issue(tmp_path, text, line_of(text, "sites:"), "sites", "102,403 hosts in the datacenters (pools expanded); "
                                                                    "the limit is 100,000")


# --------------------------------------------------------------------------- names after prefixes

SITE37 = "a" * 37


def _rename_cloud_site(name: str, env: str = "local") -> str:
    text = LOCAL.replace("aws-use1", name).replace("name: local", f"name: {env}")
    return text


def test_cloud_site_name_too_long_for_its_iam_roles(tmp_path):
    text = _rename_cloud_site(SITE37)
    assert_issue(tmp_path, text, line_of(text, f"name: {SITE37}"), "sites[0].name",
                 f"'{SITE37}-karpenter-node-role-xxxxxxx' would pass AWS's 64; at most 36")


def test_cloud_site_name_at_the_limit_is_fine(tmp_path):
    assert_valid(tmp_path, _rename_cloud_site("a" * 36))


def test_environment_and_site_names_make_a_too_long_queue(tmp_path):
    text = _rename_cloud_site("s" * 36, env="e" * 40)
    assert_issue(tmp_path, text, line_of(text, "name: " + "s" * 36), "sites[0].name",
                 "SQS queue", "(87 characters, AWS allows 80)")


@pytest.mark.parametrize("gpu,reason", [
    ("L4_24GB", "Karpenter NodePool name 'gpu-l4_24gb'"),
    ("L4 PCIe", "the node label hybridml.io/gpu-type"),
    ("L" * 60, "nvidia.com/gpu.product"),
])
def test_gpu_type_that_makes_a_bad_name(tmp_path, gpu, reason):
    text = LOCAL.replace("type: L4", f"type: '{gpu}'")
    assert_issue(tmp_path, text, line_of(text, f"type: '{gpu}'"), "sites[0].instance_types[0].gpu.type", reason)


@pytest.mark.parametrize("old,new,field,label", [
    ("zones: [us-east-1a, us-east-1b]", "zones: [us-east-1a, 'us-east-1b c']", "sites[0].zones[1]", "topology.kubernetes.io/zone"),
    ("network_zone: wan-us-east", "network_zone: 'wan us east'", "sites[1].network_zone", "hybridml.io/network-zone"),
    ("name: g6.xlarge,", f"name: g6.{'x' * 70},", "sites[0].instance_types[0].name", "node.kubernetes.io/instance-type"),
])
def test_label_values(tmp_path, old, new, field, label):
    text = edit(old, new)
    assert_issue(tmp_path, text, line_of(text, new), field, f"is the node label {label}: ", "label value")


def test_served_model_name(tmp_path):
    text = edit("served_model_name: chat-small", "served_model_name: 'chat \"small\"'")
    assert_issue(tmp_path, text, line_of(text, "served_model_name: 'chat"), "pipelines[0].engine.served_model_name",
                 "HTTP header and a Prometheus label matcher")


# --------------------------------------------------------------------------- addresses


POOL1 = "{count: 3, name_prefix: r1-h, first_address: 10.77.1.11, cores: 16, memory_gib: 64}"


@pytest.mark.parametrize("first,count,reason", [
    ("255.255.255.254", 3, "3 hosts from first_address 255.255.255.254 run past 255.255.255.255 (at most 2 fit)"),
    ("127.0.0.1", 3, "addresses 127.0.0.1..127.0.0.3: 127.0.0.1 is loopback (127.0.0.0/8), not a host address"),
    ("223.255.255.254", 3, "224.0.0.0 is multicast (224.0.0.0/4)"),
    ("250.0.0.1", 1, "250.0.0.1 is reserved or broadcast (240.0.0.0/4)"),
])
def test_pool_addresses(tmp_path, first, count, reason):
    text = edit(POOL1, POOL1.replace("10.77.1.11", first).replace("count: 3", f"count: {count}"))
    assert_issue(tmp_path, text, line_of(text, first), "sites[1].racks[0].host_pools[0]", reason)


def test_overlapping_pools_name_both(tmp_path):
    text = LOCAL.replace("first_address: 10.77.2.11", "first_address: 10.77.1.13")
    assert_issue(tmp_path, text, line_of(text, "r2-h, first_address"), "sites[1].racks[1].host_pools[0].first_address",
                 "addresses 10.77.1.13..10.77.1.15 of host pool 'r2-h' (3 hosts) clash with host pool 'r1-h' (3 hosts) at "
                 "sites[1].racks[0].host_pools[0].first_address (10.77.1.11..10.77.1.13; both have 10.77.1.13)")


def test_adjacent_pools_are_fine(tmp_path):
    assert_valid(tmp_path, LOCAL.replace("first_address: 10.77.2.11", "first_address: 10.77.1.14"))


def test_vpc_covering_datacenter_hosts(tmp_path):
    text = edit("    vpc_cidr: 10.0.0.0/16 ", "    vpc_cidr: 10.77.0.0/16 ")
    assert_issue(tmp_path, text, line_of(text, "vpc_cidr"), "sites[0].vpc_cidr", "VPC 10.77.0.0/16 of 'aws-use1' covers host pool "
                                                                                 "'r1-h'", "unreachable from the cloud")


@pytest.mark.parametrize("cidr", ["10.0.0.0/12", "fd00::/64"])
def test_vpc_size_and_family(tmp_path, cidr):
    text = edit("    vpc_cidr: 10.0.0.0/16 ", f"    vpc_cidr: {cidr} ")
    assert_issue(tmp_path, text, line_of(text, "vpc_cidr"), "sites[0].vpc_cidr", "IPv4 block between /16 and /28")


# --------------------------------------------------------------------------- what pydantic reports


def test_mapping_key_that_is_not_a_string(tmp_path):
    text = edit("    us-west: {aws-use1: 62, dc-local: 58}", "    5: {aws-use1: 62, dc-local: 58}")
    assert_issue(tmp_path, text, line_of(text, "    5: {"), "network.user_rtt_ms.5", "key 5 is not valid")


def test_boolean_key_at_the_top(tmp_path):
    text = edit("description: Embedded default.", "description: Embedded default.\ntrue: 1")
    assert_issue(tmp_path, text, line_of(text, "true: 1"), "true", "key true is not valid")


def test_list_where_a_mapping_belongs(tmp_path):
    text = edit("network:\n", "network: [1, 2]\nnetwork_was:\n")
    out = assert_issue(tmp_path, text, line_of(text, "network: [1"), "network", "valid dictionary", "(got a list)")
    assert "unknown field 'network_was'" in out


@pytest.mark.parametrize("tag,value", [("!!binary", "aGVsbG8="), ("!!set", "{a, b}"), ("!!omap", "[{a: 1}]")])
def test_tags_outside_plain_data(tmp_path, tag, value):
    text = edit(DESCRIPTION, f"description: {tag} {value}")
    assert_issue(tmp_path, text, line_of(text, tag), "description", f"the tag {tag} is not allowed here")


def test_impossible_date(tmp_path):
    text = edit(DESCRIPTION, "description: 2024-13-45")
    assert_issue(tmp_path, text, line_of(text, "2024-13-45"), "description", "cannot read '2024-13-45' as a date")


class _Fragile(StrictModel):
    a: int

    @model_validator(mode="after")
    def _boom(self):  # a validator with a bug: pydantic passes TypeError through
        raise TypeError("unsupported operand")


def test_validator_raising_something_else_is_still_a_spec_error():
    with pytest.raises(SpecError) as info:
        parse_model("a: 1\n", "frag.yaml", _Fragile, "a fragile thing")
    assert info.value.issues[0].render("frag.yaml") == "frag.yaml:1: <root>: could not be validated: TypeError: unsupported operand"


def test_cli_bootstrap_overrides_not_utf8(tmp_path):
    overrides = tmp_path / "ov.yaml"
    overrides.write_bytes(b"vars:\n  a: \"\xff\"\n")
    result = CliRunner().invoke(app, ["bootstrap", "local", "--overrides", str(overrides), "--write-inventory",
                                      str(tmp_path / "inv.yaml")])
    assert result.exit_code == 2, result.output
    assert f"{overrides}:2: <root>: not UTF-8: byte 0xff at byte offset 12 (line 2, column 7)" in result.output
    assert not (tmp_path / "inv.yaml").exists()


def test_shipped_specs_stay_far_below_the_limits():
    from infra.loader import _compose

    for name in ("local", "dev", "prod", "sim"):
        text = (REPO / "infra" / "environments" / f"{name}.yaml").read_text()
        node, loader = _compose(text, name)
        loader.dispose()
        env = parse_environment(text, name)
        hosts = sum(len(dc.all_hosts()) for dc in env.datacenters)
        assert len(text.encode()) < limits.MAX_INPUT_BYTES / 10, name
        assert loader.expanded < limits.MAX_YAML_NODES / 10, name
        assert hosts < limits.MAX_HOSTS / 10, name


def test_line_100_is_printed_as_a_line_number(tmp_path):
    # rich reads ":100:" as an emoji code unless told not to: `bad.yaml💯 name` instead of `bad.yaml:100: name`
    assert_issue(tmp_path, "#\n" * 99 + "name: [x]\n", 100, "name", "valid string (got a list)")
