"""AWS preflight: before `pulumi up`, check that the plan's instance types are offered in the site's
zones and that the account's on-demand vCPU quotas cover the plan. Library code: raises nothing for
shortfalls, returns them; the CLI prints and picks the exit code.

What counts as a shortfall (exit 1):
- an instance type the plan runs at a site is offered in none of the site's zones;
- a family's on-demand vCPU quota (Service Quotas) is below the vCPUs the plan needs there
  (planned nodes x vCPUs, plus the system node group at its surge size for the standard family);
- a quota that cannot be read (no permission, unknown code): unverified is not covered.
A type offered in only some of the zones is a warning: Karpenter launches it where it is offered.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusters.sizing import node_pools, system_pool_plan
from infra.spec import CloudSite, Environment
from policies.placement.plan import PlacementPlan

# Running On-Demand <family> instances, in vCPUs (Service Quotas, service code ec2).
QUOTA_CODES = {"P": "L-417A185B", "G": "L-DB2E81BA", "standard": "L-1216C47A"}
QUOTA_NAMES = {"P": "Running On-Demand P instances", "G": "Running On-Demand G and VT instances",
               "standard": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"}


@dataclass(frozen=True)
class Need:
    """What the plan needs from one region."""

    site: str
    region: str
    zones: tuple[str, ...]
    instance_types: dict[str, int]         # type -> planned nodes (incl. the system node group)
    vcpus: dict[str, int]                   # quota family -> planned vCPUs
    limit_vcpus: dict[str, int]             # quota family -> what Karpenter may grow to (information)


@dataclass(frozen=True)
class Finding:
    site: str
    region: str
    kind: str          # offering | quota | quota-unreadable | partial-offering (warning)
    subject: str       # instance type or quota family
    detail: str
    need: int | None = None
    have: int | None = None
    blocking: bool = True


@dataclass
class QuotaRow:
    site: str
    region: str
    family: str
    need: int
    limit: int
    quota: int | None
    spec_quota: int | None


@dataclass
class PreflightReport:
    findings: list[Finding] = field(default_factory=list)
    quotas: list[QuotaRow] = field(default_factory=list)
    offerings: dict[str, dict[str, list[str]]] = field(default_factory=dict)   # region -> type -> zones

    @property
    def shortfalls(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.blocking]

    @property
    def ok(self) -> bool:
        return not self.shortfalls


def needs(env: Environment, plan: PlacementPlan) -> list[Need]:
    """Per cloud site the plan uses: instance types with node counts and vCPUs per quota family."""
    out = []
    for site in env.cloud_sites:
        sp = next((s for s in plan.sites if s.name == site.name), None)
        if sp is None or not (sp.pipelines or sp.data):
            continue
        by_name = {it.name: it for it in site.instance_types}
        types = {t: n for t, n in sorted(sp.nodes.items()) if n > 0}
        vcpus: dict[str, int] = {}
        for t, n in types.items():
            fam = by_name[t].quota_family
            vcpus[fam] = vcpus.get(fam, 0) + n * by_name[t].vcpus
        system = system_pool_plan(env, site, sp)   # its surge node included: a rolling update needs it
        types[system.instance_type] = types.get(system.instance_type, 0) + system.max_nodes
        vcpus["standard"] = vcpus.get("standard", 0) + system.max_nodes * system.vcpus
        limits: dict[str, int] = {}
        for pool in node_pools(env, site, sp):
            fam = by_name[pool.instance_types[0]].quota_family
            limits[fam] = limits.get(fam, 0) + pool.limit_cpu
        out.append(Need(site.name, site.region, tuple(site.zones), types, vcpus, limits))
    return out


def _offerings(ec2, types: list[str]) -> dict[str, list[str]]:
    found: dict[str, set[str]] = {t: set() for t in types}
    paginator = ec2.get_paginator("describe_instance_type_offerings")
    for page in paginator.paginate(LocationType="availability-zone",
                                   Filters=[{"Name": "instance-type", "Values": types}]):
        for o in page.get("InstanceTypeOfferings", []):
            found.setdefault(o["InstanceType"], set()).add(o["Location"])
    return {t: sorted(z) for t, z in found.items()}


def _quota(sq, code: str) -> tuple[int | None, str]:
    """Applied quota, else the AWS default; (None, why) when neither can be read."""
    errors = []
    for call in (sq.get_service_quota, sq.get_aws_default_service_quota):
        try:
            return int(math.floor(call(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])), ""
        # Any failure means "not verified" (AccessDenied, NoSuchResource, an API a mock lacks, ...):
        # reported as a blocking finding, never as covered.
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{call.__name__}: {getattr(exc, 'response', {}).get('Error', {}).get('Code') or exc}")
    return None, "; ".join(errors)


def run_preflight(env: Environment, plan: PlacementPlan,
                  client: Callable[[str, str], Any] | None = None) -> PreflightReport:
    """Check every cloud site of the plan. `client(service, region)` defaults to boto3 clients."""
    if client is None:
        import boto3

        def client(service: str, region: str) -> Any:
            return boto3.client(service, region_name=region)

    report = PreflightReport()
    for need in needs(env, plan):
        site = env.site(need.site)
        assert isinstance(site, CloudSite)
        offered = _offerings(client("ec2", need.region), sorted(need.instance_types))
        report.offerings[need.region] = offered
        for t in sorted(need.instance_types):
            zones = [z for z in need.zones if z in offered.get(t, [])]
            if not zones:
                report.findings.append(Finding(
                    need.site, need.region, "offering", t,
                    f"{t} is not offered in any of {', '.join(need.zones)} (the plan runs "
                    f"{need.instance_types[t]} node(s)); fix: add a zone that offers it to the site, or remove "
                    f"{t} from the site's instance_types and re-plan"))
            elif len(zones) < len(need.zones):
                missing = [z for z in need.zones if z not in zones]
                report.findings.append(Finding(
                    need.site, need.region, "partial-offering", t,
                    f"{t} is not offered in {', '.join(missing)}: its nodes all land in {', '.join(zones)}",
                    blocking=False))
        sq = client("service-quotas", need.region)
        for fam in sorted(need.vcpus):
            quota, why = _quota(sq, QUOTA_CODES[fam])
            report.quotas.append(QuotaRow(need.site, need.region, fam, need.vcpus[fam],
                                          need.limit_vcpus.get(fam, need.vcpus[fam]), quota,
                                          site.vcpu_quotas.get(fam)))  # type: ignore[call-overload]
            if quota is None:
                report.findings.append(Finding(
                    need.site, need.region, "quota-unreadable", fam,
                    f"cannot read quota {QUOTA_CODES[fam]} ({QUOTA_NAMES[fam]}): {why}; grant "
                    "servicequotas:GetServiceQuota and servicequotas:GetAWSDefaultServiceQuota", need.vcpus[fam]))
            elif quota < need.vcpus[fam]:
                report.findings.append(Finding(
                    need.site, need.region, "quota", fam,
                    f"{QUOTA_NAMES[fam]} ({QUOTA_CODES[fam]}) is {quota} vCPUs, the plan needs {need.vcpus[fam]} "
                    f"(short by {need.vcpus[fam] - quota}); fix: request an increase in Service Quotas, or set "
                    f"the site's vcpu_quotas.{fam} to {quota} and re-plan", need.vcpus[fam], quota))
    return report
