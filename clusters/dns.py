"""DNS for the hostnames the gateways answer, through external-dns's `service` source. Pure (no Pulumi): the
contract between the cluster that runs external-dns (clusters/cloud_gpu_cluster.py installs it on cloud sites;
datacenters run the organisation's own, README "Prerequisites") and the workloads that annotate their
LoadBalancer Services (workloads/render/gateway.py on the gateways' EnvoyProxy `envoyService`, the data stores'
fleet load balancers).

Annotation prefix: external-dns v0.22 moved its default prefix from `external-dns.alpha.kubernetes.io/` to
`external-dns.kubernetes.io/`. The program keeps the older prefix everywhere (its data stores, the data-path
rule) and runs external-dns with `--annotation-prefix` set to it, so one prefix is read by every release.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from infra import labels
from infra.versions import OPERATORS, chart_version

ANNOTATION_PREFIX = "external-dns.alpha.kubernetes.io/"
HOSTNAME = ANNOTATION_PREFIX + "hostname"
SET_IDENTIFIER = ANNOTATION_PREFIX + "set-identifier"
AWS_REGION = ANNOTATION_PREFIX + "aws-region"
"""Route53 latency-based routing: with a set identifier per site, a name several sites publish resolves to the
lowest-latency region among the healthy ones (alias records to the load balancers evaluate target health)."""

RELEASE = OPERATORS["external-dns"]
CHART_REPO, _, CHART = (RELEASE.chart or "").rpartition("/")
CHART_VERSION = chart_version("external-dns")
NAMESPACE = RELEASE.namespace or "external-dns"
SERVICE_ACCOUNT = "external-dns"
RESOURCES = {"cpu": "50m", "memory": "128Mi"}
"""Requests = limits; what clusters/sizing.py counts for the release on the system nodes."""


def hostnames_of(annotations: dict[str, str]) -> list[str]:
    """The hostnames an annotated Service asks external-dns to publish."""
    return [h.strip() for h in (annotations.get(HOSTNAME) or "").split(",") if h.strip()]


def service_annotations(hosts: Iterable[str], *, set_identifier: str | None = None,
                        aws_region: str | None = None) -> dict[str, str]:
    """external-dns annotations of one LoadBalancer Service: the hostnames it answers (sorted, comma-separated)
    and, on a cloud site, latency-based routing (a set identifier per site, the site's AWS region)."""
    names = sorted(set(hosts))
    if not names:
        return {}
    out = {HOSTNAME: ",".join(names)}
    if aws_region:
        out[SET_IDENTIFIER] = set_identifier or aws_region
        out[AWS_REGION] = aws_region
    return out


@dataclass(frozen=True)
class HostedZone:
    """The Route53 hosted zone external-dns writes to: the environment's domain (WorkloadOptions.zone) and, when
    the stack config names it (`hybridml:hostedZoneId`), the zone's id (external-dns and its IAM policy are then
    pinned to that zone; without it external-dns finds the public zone of the domain)."""

    domain: str
    zone_id: str | None = None


def external_dns_values(*, owner_id: str, zone: HostedZone, region: str) -> dict:
    """Helm values of external-dns on a cloud site: the `service` source, Route53, TXT ownership records per cluster
    (`owner_id`, so every site's instance keeps to its own records of a shared name), full sync within the
    environment's domain, on the system nodes, its container under Pod Security `restricted`."""
    args = ["--aws-evaluate-target-health"]
    args += [f"--zone-id-filter={zone.zone_id}"] if zone.zone_id else ["--aws-zone-type=public"]
    return {
        "provider": {"name": "aws"},
        "sources": ["service"],
        "policy": "sync",
        "registry": "txt",
        "txtOwnerId": owner_id,
        "domainFilters": [zone.domain],
        "annotationPrefix": ANNOTATION_PREFIX,     # the chart passes --annotation-prefix
        "extraArgs": args,
        "env": [{"name": "AWS_DEFAULT_REGION", "value": region}],
        "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
        "nodeSelector": {labels.NODE_ROLE: "system"},
        "resources": {"requests": dict(RESOURCES), "limits": dict(RESOURCES)},
        "podSecurityContext": {"runAsNonRoot": True, "fsGroup": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
        "securityContext": {"privileged": False, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
    }
