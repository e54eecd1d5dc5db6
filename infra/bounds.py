"""Bounds across the whole spec, which no single field can check: how many hosts the fleet has and how many
replicas a pipeline needs (limits.MAX_HOSTS, limits.MAX_REPLICAS), and address ranges: host and pool ranges
that overlap, and cloud VPCs that cover on-prem hosts.

Addresses are checked as ranges (a pool of 512 hosts is one range), so a clash is reported once per pool, naming the
other side, and the cost does not grow with pool sizes. A pool that runs past 255.255.255.255 or into
loopback/multicast/reserved space is refused by the model itself (infra.spec.HostPool).

Cloud VPCs may repeat one another (each region's VPC stands alone; the sites talk through their gateways),
but a VPC must not cover the address of an own-datacenter host: the hybrid network routes between them.
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
                out.append(_Range(a, a, len(out), base + ("hosts", hi, "address"), f"host {host.name!r}"))
            for pi, pool in enumerate(rack.host_pools):
                a = int(pool.first_address)
                out.append(_Range(a, a + pool.count - 1, len(out), base + ("host_pools", pi, "first_address"),
                                  f"host pool {pool.name_prefix!r} ({pool.count} hosts)"))
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
    for si, site in enumerate(env.sites):
        if not isinstance(site, CloudSite):
            continue
        net = ipaddress.ip_network(site.vpc_cidr)
        lo, hi = int(net.network_address), int(net.broadcast_address)
        inside = next((r for r in ranges if r.first <= hi and lo <= r.last), None)
        if inside is not None:
            issues.append(SpecIssue(("sites", si, "vpc_cidr"),
                                    f"VPC {site.vpc_cidr} of {site.name!r} covers {inside.what} at {_fmt(inside.path)} "
                                    f"({inside.span()}): own-datacenter hosts would be unreachable from the cloud cluster; "
                                    "pick a VPC CIDR outside the datacenter networks"))
    return issues


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
