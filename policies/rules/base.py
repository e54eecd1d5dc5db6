"""The shape of a policy rule and of what it looks at. Pure: no Pulumi, no I/O.

The same rules run at `pulumi preview` (CrossGuard pack, policies/pack) and offline
(`hybridml check`, over the program run under mocks). Each sees a `ResourceView`
(Pulumi type token, name, input properties, the cluster/site it targets) and a
`Context` with the facts about sites and the placement plan.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Severity(str, Enum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class Enforcement(str, Enum):
    mandatory = "mandatory"  # blocks preview/up and fails `hybridml check`
    advisory = "advisory"    # reported, never blocks


@dataclass(frozen=True)
class SiteFacts:
    """What policy needs to know about the site behind a cluster."""

    name: str
    kind: str                      # cloud | datacenter
    privacy_tiers: tuple[str, ...]
    gpu_types: tuple[str, ...]
    kubernetes_version: tuple[int, int] | None = None   # the cluster's minor version, where the spec says it


@dataclass(frozen=True)
class ResourceView:
    type: str                      # Pulumi type token, e.g. kubernetes:apps/v1:Deployment
    name: str                      # Pulumi resource name
    props: dict[str, Any]
    cluster: str | None = None     # site whose Kubernetes provider the resource uses
    urn: str = ""

    @property
    def kind(self) -> str:
        """Kubernetes kind (last part of the type token) for kubernetes:* resources."""
        return self.type.rsplit(":", 1)[-1]

    @property
    def is_kubernetes(self) -> bool:
        return self.type.startswith("kubernetes:")

    @property
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.props.get("metadata") or {}
        return meta

    @property
    def labels(self) -> dict[str, Any]:
        labels: dict[str, Any] = self.metadata.get("labels") or {}
        return labels

    @property
    def display(self) -> str:
        ns = self.metadata.get("namespace")
        obj = f"{self.kind} {ns + '/' if ns else ''}{self.metadata.get('name', self.name)}" if self.is_kubernetes else \
            f"{self.type} {self.name}"
        return obj


@dataclass
class Context:
    sites: dict[str, SiteFacts] = field(default_factory=dict)
    plan: Any = None               # policies.placement.plan.PlacementPlan, when known
    env: Any = None                # infra.spec.Environment, when known
    gateway_namespaces: tuple[str, ...] = ("hybridml-gateway",)
    pss_version: tuple[int, int] = (1, 37)   # Pod Security Standards level ("latest") where a cluster's version is unknown


@dataclass(frozen=True)
class Finding:
    rule: str
    resource: str
    message: str
    fix: str
    cluster: str | None
    mandatory: bool
    severity: str


Check = Callable[[ResourceView, Context], Iterable[str]]
StackCheck = Callable[[list[ResourceView], Context], Iterable[tuple[str, ...]]]  # (resource display, message[, cluster])


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    severity: Severity
    enforcement: Enforcement
    fix: str
    check: Check | None = None             # per resource: yields messages
    stack_check: StackCheck | None = None  # over all resources: yields (resource, message)
    group: str = "kubernetes"

    def findings(self, resource: ResourceView, ctx: Context) -> list[Finding]:
        if self.check is None:
            return []
        return [Finding(self.name, resource.display, msg, self.fix, resource.cluster,
                        self.enforcement is Enforcement.mandatory, self.severity.value)
                for msg in self.check(resource, ctx)]

    def stack_findings(self, resources: list[ResourceView], ctx: Context) -> list[Finding]:
        if self.stack_check is None:
            return []
        by_display = {r.display: r for r in resources}
        out = []
        for found in self.stack_check(resources, ctx):
            display, msg = found[0], found[1]
            # A display is not unique across clusters: a check that knows the cluster says it as a third item.
            cluster = found[2] if len(found) > 2 else by_display[display].cluster if display in by_display else None
            out.append(Finding(self.name, display, msg, self.fix, cluster,
                               self.enforcement is Enforcement.mandatory, self.severity.value))
        return out


def evaluate(rules: Iterable[Rule], resources: list[ResourceView], ctx: Context) -> list[Finding]:
    """Every finding of every rule, resources in the given order, then stack-wide findings."""
    rules = list(rules)
    out: list[Finding] = []
    for resource in resources:
        for rule in rules:
            out.extend(rule.findings(resource, ctx))
    for rule in rules:
        out.extend(rule.stack_findings(resources, ctx))
    return out
