"""Kubernetes baseline beyond Pod Security: resources, probes, images, network policy, exposure, labels."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from policies.rules.base import Context, Enforcement, ResourceView, Rule, Severity
from policies.rules.pod_security import _exempt
from policies.rules.podspec import LONG_RUNNING, containers, pod_specs

RECOMMENDED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                      "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "LeaderWorkerSet", "Pod",
                  "InferenceService", "FlinkDeployment"}
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def _pods(r: ResourceView) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    if not r.is_kubernetes or _exempt(r):
        return []
    return list(pod_specs(r.kind, r.props))


def requests_and_limits(r: ResourceView, ctx: Context) -> Iterable[str]:
    for where, _, spec in _pods(r):
        for cw, c in containers(spec, include_init=True):
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                got = res.get(part) or {}
                missing = [k for k in ("cpu", "memory") if k not in got]
                if missing:
                    yield f"{where}.{cw} has no {part} for {', '.join(missing)}"


def probes(r: ResourceView, ctx: Context) -> Iterable[str]:
    if r.kind not in LONG_RUNNING and r.kind != "InferenceService":
        return
    for where, _, spec in _pods(r):
        for cw, c in containers(spec, include_init=False):
            for probe in ("readinessProbe", "livenessProbe"):
                if r.kind == "InferenceService":
                    continue  # KServe injects probes for its model server; explicit ones are optional
                if not c.get(probe):
                    yield f"{where}.{cw} has no {probe}"


def pinned_images(r: ResourceView, ctx: Context) -> Iterable[str]:
    for where, _, spec in _pods(r):
        for cw, c in containers(spec):
            image = c.get("image")
            if not image:
                if r.kind in ("InferenceService", "ServingRuntime"):
                    continue  # image comes from the ServingRuntime
                yield f"{where}.{cw} has no image"
                continue
            last = str(image).rsplit("/", 1)[-1]
            if DIGEST.search(str(image)):
                continue
            if ":" not in last:
                yield f"{where}.{cw} image {image!r} has no tag or digest"
            elif last.endswith(":latest"):
                yield f"{where}.{cw} image {image!r} uses the mutable tag 'latest'"


def read_only_root(r: ResourceView, ctx: Context) -> Iterable[str]:
    for where, _, spec in _pods(r):
        for cw, c in containers(spec):
            if (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
                yield f"{where}.{cw} has a writable root filesystem"


def no_public_load_balancer(r: ResourceView, ctx: Context) -> Iterable[str]:
    if r.type != "kubernetes:core/v1:Service":
        return
    spec = r.props.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return
    ns = r.metadata.get("namespace")
    annotations = r.metadata.get("annotations") or {}
    internal = (annotations.get("service.beta.kubernetes.io/aws-load-balancer-scheme") == "internal"
                or annotations.get("service.beta.kubernetes.io/aws-load-balancer-internal") in ("true", "0.0.0.0/0"))
    ranges = spec.get("loadBalancerSourceRanges") or []
    private_only = bool(ranges) and all(_private(cidr) for cidr in ranges)
    if ns not in ctx.gateway_namespaces and not internal and not private_only:
        yield f"LoadBalancer Service in namespace {ns!r} is public; only the gateway may be"


def _private(cidr: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_network(cidr, strict=False).is_private
    except ValueError:
        return False


def recommended_labels(r: ResourceView, ctx: Context) -> Iterable[str]:
    if not r.is_kubernetes or r.kind not in WORKLOAD_KINDS | {"Service", "StatefulSet"}:
        return
    missing = [k for k in RECOMMENDED_LABELS if k not in r.labels]
    if missing:
        yield f"missing labels {', '.join(missing)}"


def network_policy_per_namespace(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    """Every namespace that runs pods has a default-deny NetworkPolicy (empty podSelector)."""
    covered: set[tuple[str | None, str]] = set()
    for r in resources:
        if r.type == "kubernetes:networking.k8s.io/v1:NetworkPolicy":
            spec = r.props.get("spec") or {}
            if not (spec.get("podSelector") or {}).get("matchLabels") and not (spec.get("podSelector") or {}).get("matchExpressions"):
                covered.add((r.cluster, r.metadata.get("namespace", "default")))
    seen = set()
    for r in resources:
        if r.is_kubernetes and _pods(r):
            key = (r.cluster, r.metadata.get("namespace", "default"))
            if key not in covered and key not in seen:
                seen.add(key)
                yield r.display, f"namespace {key[1]!r} on {key[0] or 'the cluster'} has no default-deny NetworkPolicy"


RULES = [
    Rule("k8s-requests-limits", "Every container requests and limits CPU and memory.", Severity.high,
         Enforcement.mandatory, "set resources.requests and resources.limits for cpu and memory", check=requests_and_limits),
    Rule("k8s-probes", "Long-running containers have readiness and liveness probes.", Severity.medium,
         Enforcement.mandatory, "add readinessProbe and livenessProbe", check=probes),
    Rule("k8s-pinned-images", "Images carry an explicit tag or digest, never 'latest'.", Severity.high,
         Enforcement.mandatory, "pin the image to a version tag or @sha256 digest", check=pinned_images),
    Rule("k8s-read-only-root-filesystem", "Root filesystems are read-only where possible.", Severity.low,
         Enforcement.advisory, "set readOnlyRootFilesystem: true and mount emptyDirs for scratch paths",
         check=read_only_root),
    Rule("k8s-no-public-load-balancer", "No public LoadBalancer Services except the gateway.", Severity.critical,
         Enforcement.mandatory, "use ClusterIP, or an internal load balancer annotation", check=no_public_load_balancer),
    Rule("k8s-recommended-labels", "Workloads carry the app.kubernetes.io recommended labels.", Severity.low,
         Enforcement.advisory, "add app.kubernetes.io/{name,instance,component,part-of,managed-by}",
         check=recommended_labels),
    Rule("k8s-network-policy-per-namespace", "Each namespace with pods has a default-deny NetworkPolicy.",
         Severity.high, Enforcement.mandatory, "add a NetworkPolicy with an empty podSelector and explicit allows",
         stack_check=network_policy_per_namespace),
]
