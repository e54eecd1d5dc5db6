"""Every site has its own network (issue 18): a cloud region's VPC is required and overlaps no other VPC nor any
datacenter network (the /24s of its hosts), and two datacenters share no /24, because the data stores admit the
readers of other sites by these ranges. A clash is bad input: exit 2, `file:line: field path: reason` naming the
other side and a free range of the same size, from `validate` and from `check` alike."""
from __future__ import annotations

import ipaddress
import itertools

import pytest
from typer.testing import CliRunner

from hybridml.cli import app
from infra.bounds import free_range, site_networks
from infra.loader import load_environment
from tests.conftest import REPO

LOCAL = (REPO / "infra" / "environments" / "local.yaml").read_text()
CLOUD = LOCAL[LOCAL.index("  - kind: cloud"):LOCAL.index("  - kind: datacenter")]


def run(tmp_path, text: str, command: str = "validate") -> tuple[int, str, str]:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, [command, str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.exit_code, result.output, str(path)


def line_of(text: str, needle: str, nth: int = 0) -> int:
    return [i + 1 for i, line in enumerate(text.splitlines()) if needle in line][nth]


def second_region(vpc: str) -> str:
    """local.yaml with a second cloud region, aws-use2 (VPC `vpc`), with its RTTs."""
    site = (CLOUD.replace("name: aws-use1", "name: aws-use2").replace("region: us-east-1", "region: us-east-2")
            .replace("us-east-1a, us-east-1b", "us-east-2a, us-east-2b").replace("vpc_cidr: 10.0.0.0/16", f"vpc_cidr: {vpc}"))
    text = LOCAL.replace("  - kind: datacenter", site + "  - kind: datacenter", 1)
    text = text.replace("us-east: {aws-use1: 8, dc-local: 12}", "us-east: {aws-use1: 8, aws-use2: 12, dc-local: 12}")
    text = text.replace("us-west: {aws-use1: 62, dc-local: 58}", "us-west: {aws-use1: 62, aws-use2: 50, dc-local: 58}")
    return text.replace("aws-use1: {dc-local: 4}", "aws-use1: {dc-local: 4, aws-use2: 12}\n    aws-use2: {dc-local: 12}")


@pytest.mark.parametrize("spec", ["local", "dev", "prod", "sim"])
def test_the_shipped_environments_give_every_site_its_own_network(spec):
    nets = {site: [ipaddress.IPv4Network(n) for n in ns] for site, ns in site_networks(load_environment(spec)).items()}
    assert all(nets.values())
    for (a, na), (b, nb) in itertools.combinations(nets.items(), 2):
        assert not any(x.overlaps(y) for x in na for y in nb), (a, b)


def test_generated_regions_each_get_their_own_vpc():
    vpcs = [s.vpc_cidr for s in load_environment("prod").cloud_sites]
    assert len(vpcs) == 4 and len(set(vpcs)) == 4 and "10.0.0.0/16" not in vpcs


def test_a_region_without_vpc_cidr_is_refused(tmp_path):
    text = LOCAL.replace("    vpc_cidr: 10.0.0.0/16      # required", "    # required")
    code, output, file = run(tmp_path, text)
    assert code == 2, output
    assert "sites[0].vpc_cidr: required field 'vpc_cidr' is missing" in output and f"{file}:" in output


def test_two_regions_on_one_vpc_range_name_both_and_a_free_range(tmp_path):
    text = second_region("10.0.128.0/17")
    assert LOCAL.count("vpc_cidr") == 1 and text.count("vpc_cidr") == 2
    code, output, file = run(tmp_path, text)
    assert code == 2, output
    line = line_of(text, "vpc_cidr", 1)
    assert (f"  {file}:{line}: sites[1].vpc_cidr: VPC 10.0.128.0/17 of 'aws-use2' overlaps VPC 10.0.0.0/16 of 'aws-use1' "
            "at sites[0].vpc_cidr") in output
    assert "e.g. 10.1.0.0/17, which no site uses" in output      # 10.0/16 is aws-use1's; the first free /17 after it


def test_distinct_regions_validate(tmp_path):
    code, output, _ = run(tmp_path, second_region("10.1.0.0/16"))
    assert code == 0, output


def test_a_vpc_inside_a_datacenter_network_is_refused_even_between_hosts(tmp_path):
    # 10.77.1.128/25 holds no host (they are .11-.13) but is inside dc-local's 10.77.1.0/24, which its readers come from
    text = LOCAL.replace("vpc_cidr: 10.0.0.0/16 ", "vpc_cidr: 10.77.1.128/25 ")
    code, output, file = run(tmp_path, text)
    assert code == 2, output
    assert (f"{file}:{line_of(text, 'vpc_cidr')}: sites[0].vpc_cidr: VPC 10.77.1.128/25 of 'aws-use1' overlaps 10.77.1.0/24, "
            "a network of datacenter 'dc-local'") in output
    assert "e.g. 10.0.0.0/25, which no site uses" in output


def test_two_datacenters_in_one_slash24_are_refused(tmp_path):
    dc = LOCAL[LOCAL.index("  - kind: datacenter"):LOCAL.index("\nnetwork:")]
    twin = (dc.replace("name: dc-local", "name: dc-twin").replace("r1-h, first_address: 10.77.1.11", "t1-h, first_address: 10.77.1.100")
            .replace("r2-h, first_address: 10.77.2.11", "t2-h, first_address: 10.78.2.11"))
    text = LOCAL.replace(dc, dc + "\n" + twin).replace("dc-local: 12}", "dc-local: 12, dc-twin: 12}")
    text = text.replace("dc-local: 58}", "dc-local: 58, dc-twin: 58}").replace("{dc-local: 4}", "{dc-local: 4, dc-twin: 4}\n    dc-local: {dc-twin: 1}")
    code, output, file = run(tmp_path, text)
    assert code == 2, output
    assert (f"{file}:{line_of(text, 't1-h, first_address')}: sites[2].racks[0].host_pools[0].first_address: host pool 't1-h' "
            "(3 hosts) of datacenter 'dc-twin' (10.77.1.100..10.77.1.102) shares the network 10.77.1.0/24 with host pool "
            "'r1-h' (3 hosts) of datacenter 'dc-local'") in output


def test_check_refuses_overlapping_regions_as_bad_input(tmp_path):
    """`hybridml check` on a spec whose regions share a range: input validation, exit 2 with file:line (not a policy
    violation, exit 1: nothing is rendered from a spec that fails validation)."""
    text = second_region("10.0.0.0/16")
    code, output, file = run(tmp_path, text, "check")
    assert code == 2, output
    assert f"{file}:{line_of(text, 'vpc_cidr', 1)}: sites[1].vpc_cidr: VPC 10.0.0.0/16 of 'aws-use2' overlaps" in output


@pytest.mark.parametrize("taken,prefix,free", [
    ([], 16, "10.0.0.0/16"),
    (["10.0.0.0/16", "10.1.0.0/16"], 16, "10.2.0.0/16"),
    (["10.0.0.0/8"], 16, "172.16.0.0/16"),
    (["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"], 24, None),
    (["10.0.0.0/16", "10.1.2.0/24"], 24, "10.1.0.0/24"),
    (["10.0.0.0/8", "172.16.0.0/12"], 8, None),
])
def test_free_range(taken, prefix, free):
    assert free_range([ipaddress.IPv4Network(t) for t in taken], prefix) == free
