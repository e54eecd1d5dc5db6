"""Bounds across the whole spec, which no single field can check: how many hosts the fleet has and how many
replicas a pipeline needs (limits.MAX_HOSTS, limits.MAX_REPLICAS), and address ranges: host and pool ranges
that overlap, and cloud VPCs that cover on-prem hosts.

Addresses are checked as ranges (a pool of 512 hosts is one range), so a clash is reported once per pool, naming the
other side, and the cost does not grow with pool sizes. A pool that runs past 255.255.255.255 or into
loopback/multicast/reserved space is refused by the model itself (infra.spec.HostPool).

Site networks (`site_networks`): a cloud site's VPC, a datacenter's /24s of its hosts (pod traffic leaving an on-prem
cluster is SNATed to the node address). The data stores admit readers of other sites by these ranges
(loadBalancerSourceRanges, NetworkPolicy ipBlocks; rule `data-path-narrow`), so no two sites' networks may overlap:
a VPC overlaps no other VPC, covers no datacenter host and no datacenter /24, and two datacenters share no /24.
Each clash names the later side, the earlier one, and a free range of the same size as the fix.
Pure: returns issues, the loader adds lines.
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from infra import limits
from infra.errors import SpecIssue
from infra.spec import CloudSite, Datacenter, Environment

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class _Range:
    first: int
    last: int
    order: int          # position in the spec: the later of two clashing ranges gets the blame
    path: Path
    what: str
    site: str = ""

    def span(self) -> str:
        a, b = ipaddress.IPv4Address(self.first), ipaddress.IPv4Address(self.last)
        return str(a) if a == b else f"{a}..{b}"


def host_ranges(env: Environment) -> list[_Range]:
    """Every explicit host and every pool of every datacenter, as address ranges in spec order."""
    out: list[_Range] = []
    for si, site in enumerate(env.sites):
        if not isinstance(site, Datacenter):
            continue
        for ri, rack in enumerate(site.racks):
            base: Path = ("sites", si, "racks", ri)
            for hi, host in enumerate(rack.hosts):
                a = int(host.address)
                out.append(_Range(a, a, len(out), base + ("hosts", hi, "address"), f"host {host.name!r}", site.name))
            for pi, pool in enumerate(rack.host_pools):
                a = int(pool.first_address)
                out.append(_Range(a, a + pool.count - 1, len(out), base + ("host_pools", pi, "first_address"),
                                  f"host pool {pool.name_prefix!r} ({pool.count} hosts)", site.name))
    return out


def check_addresses(env: Environment) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    ranges = host_ranges(env)
    # sweep in address order, keeping the range that reaches furthest: each range clashes with it or with none
    reach: _Range | None = None
    blamed: set[int] = set()
    for r in sorted(ranges, key=lambda r: (r.first, r.order)):
        if reach is not None and r.first <= reach.last:
            late, early = (r, reach) if r.order > reach.order else (reach, r)
            if late.order not in blamed:
                blamed.add(late.order)
                both = ipaddress.IPv4Address(max(late.first, early.first))
                noun = "address" if late.first == late.last else "addresses"
                issues.append(SpecIssue(late.path, f"{noun} {late.span()} of {late.what} clash with {early.what} at "
                                                   f"{_fmt(early.path)} ({early.span()}; both have {both})"))
        if reach is None or r.last > reach.last:
            reach = r
    issues += _network_clashes(env, ranges)
    return issues


def _slash24s(r: _Range) -> range:
    return range(r.first >> 8, (r.last >> 8) + 1)


def datacenter_networks(ranges: list[_Range]) -> dict[str, list[ipaddress.IPv4Network]]:
    """datacenter -> the /24s of its hosts, collapsed (what other sites' data stores admit it by)."""
    nets: dict[str, set[int]] = {}
    for r in ranges:
        nets.setdefault(r.site, set()).update(_slash24s(r))
    return {site: list(ipaddress.collapse_addresses(ipaddress.IPv4Network((n << 8, 24)) for n in sorted(blocks)))
            for site, blocks in nets.items()}


def site_networks(env: Environment) -> dict[str, list[str]]:
    """Source ranges of traffic from each site: a cloud site's VPC (pods get VPC addresses), a datacenter's /24s of
    its hosts, collapsed (on-prem pod traffic to another site is SNATed to the node address)."""
    dcs = datacenter_networks(host_ranges(env))
    return {s.name: [s.vpc_cidr] if isinstance(s, CloudSite) else [str(n) for n in dcs.get(s.name, [])] for s in env.sites}


def _network_clashes(env: Environment, ranges: list[_Range]) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    # two datacenters in one /24: their readers could not be told apart
    owner: dict[int, _Range] = {}
    blamed: set[int] = set()
    for r in ranges:
        for block in _slash24s(r):
            first = owner.setdefault(block, r)
            if first.site != r.site and r.order not in blamed:
                blamed.add(r.order)
                net = ipaddress.IPv4Network((block << 8, 24))
                issues.append(SpecIssue(r.path, f"{r.what} of datacenter {r.site!r} ({r.span()}) shares the network {net} with "
                                                f"{first.what} of datacenter {first.site!r} at {_fmt(first.path)}: a data store "
                                                "admits each site by its /24s and could not tell the two apart; give each "
                                                "datacenter its own /24s"))
    dc_nets = [(site, net) for site, nets in datacenter_networks(ranges).items() for net in nets]
    taken = [n for _, n in dc_nets] + [ipaddress.IPv4Network(s.vpc_cidr) for s in env.cloud_sites]
    seen: list[tuple[int, CloudSite]] = []
    for si, site in enumerate(env.sites):
        if not isinstance(site, CloudSite):
            continue
        vpc = ipaddress.IPv4Network(site.vpc_cidr)
        lo, hi = int(vpc.network_address), int(vpc.broadcast_address)
        free = free_range([n for n in taken if n != vpc], vpc.prefixlen)
        fix = f"e.g. {free}, which no site uses" if free else "no private range of that size is free"
        inside = next((r for r in ranges if r.first <= hi and lo <= r.last), None)
        earlier = next(((i, s) for i, s in seen if vpc.overlaps(ipaddress.IPv4Network(s.vpc_cidr))), None)
        if inside is not None:
            issues.append(SpecIssue(("sites", si, "vpc_cidr"),
                                    f"VPC {site.vpc_cidr} of {site.name!r} covers {inside.what} at {_fmt(inside.path)} "
                                    f"({inside.span()}): own-datacenter hosts would be unreachable from the cloud cluster; "
                                    f"pick a VPC CIDR outside the datacenter networks, {fix}"))
        elif (dc := next(((d, n) for d, n in dc_nets if vpc.overlaps(n)), None)) is not None:
            issues.append(SpecIssue(("sites", si, "vpc_cidr"),
                                    f"VPC {site.vpc_cidr} of {site.name!r} overlaps {dc[1]}, a network of datacenter {dc[0]!r} "
                                    f"(the /24s of its hosts): a data store could not tell their readers apart; pick a VPC "
                                    f"CIDR outside the datacenter networks, {fix}"))
        elif earlier is not None:
            i, other = earlier
            issues.append(SpecIssue(("sites", si, "vpc_cidr"),
                                    f"VPC {site.vpc_cidr} of {site.name!r} overlaps VPC {other.vpc_cidr} of {other.name!r} at "
                                    f"sites[{i}].vpc_cidr: every cloud region needs its own range (the data stores admit "
                                    f"readers by it); {fix}"))
        seen.append((si, site))
    return issues


PRIVATE_BLOCKS = (ipaddress.IPv4Network("10.0.0.0/8"), ipaddress.IPv4Network("172.16.0.0/12"),
                  ipaddress.IPv4Network("192.168.0.0/16"))


def free_range(taken: list[ipaddress.IPv4Network], prefixlen: int) -> str | None:
    """The first private block of `prefixlen` bits that overlaps none of `taken` (None when there is none)."""
    size = 1 << (32 - prefixlen)
    spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in taken)
    for block in PRIVATE_BLOCKS:
        if block.prefixlen > prefixlen:
            continue
        at, end = int(block.network_address), int(block.broadcast_address)
        while at + size - 1 <= end:
            clash = next((b for a, b in spans if a <= at + size - 1 and at <= b), None)
            if clash is None:
                return str(ipaddress.IPv4Network((at, prefixlen)))
            at = (clash // size + 1) * size
    return None


def check_sizes(env: Environment) -> list[SpecIssue]:
    """Totals that one field's bound cannot catch: the hosts of the whole fleet (before any pool is expanded)
    and the replicas each pipeline needs. The loader stops at these before any other check runs."""
    issues: list[SpecIssue] = []
    hosts = sum(len(r.hosts) + sum(p.count for p in r.host_pools)
                for s in env.sites if isinstance(s, Datacenter) for r in s.racks)
    if hosts > limits.MAX_HOSTS:
        issues.append(SpecIssue(("sites",), f"{hosts:,} hosts in the datacenters (pools expanded); the limit is {limits.MAX_HOSTS:,}"))
    for pi, p in enumerate(env.pipelines):
        usable = p.capacity_rps * p.target_utilization
        total = sum(p.demand_rps.values())
        need = total / usable if usable > 0 else math.inf
        if need > limits.MAX_REPLICAS:
            issues.append(SpecIssue(("pipelines", pi, "demand_rps"),
                                    f"demand {total:g} rps over capacity_rps {p.capacity_rps:g} x target_utilization "
                                    f"{p.target_utilization:g} needs {need:,.0f} replicas; the limit is {limits.MAX_REPLICAS:,} "
                                    "per pipeline (raise capacity_rps, or split the pipeline)"))
    return issues


def _fmt(path: Path) -> str:
    return SpecIssue(path=path, message="").dotted_path
