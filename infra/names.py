"""Names the spec hands to Kubernetes and AWS, checked with the prefixes and suffixes they get downstream.

A spec name can be valid on its own (`Name` in infra.spec: a DNS-1123 label of at most 40 characters) and
still make an invalid name once the program builds on it: `<env>-<site>-karpenter` (an SQS queue),
`gpu-<type>` (a Karpenter NodePool), `NVIDIA-<type>` (a node label value). Names built with
`workloads.render.meta.k8s_name` are always valid (too long ones end in a hash), so they need no check here;
the rest are listed below with where they are built. Pure: returns issues, the loader adds lines.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from infra import labels
from infra.errors import SpecIssue
from infra.spec import CloudSite, Environment, GpuShape

Path = tuple[str | int, ...]

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")          # <= 63: namespaces, DNS names
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")     # <= 253: most object names
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")  # <= 63
HEADER_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")

# clusters/cloud_gpu_cluster.py: IAM roles named `<site><suffix>`, auto-named by Pulumi with `-` and 7 random
# characters; IAM allows 64. The longest suffix decides.
IAM_ROLE_SUFFIXES = ("-cluster-role", "-system-node-role", "-karpenter-node-role", "-vpc-cni-role", "-ebs-csi-role",
                     "-karpenter-role")
PULUMI_AUTONAME_SUFFIX = 8
IAM_ROLE_MAX = 64
# clusters/cloud_gpu_cluster.py: the Karpenter interruption queue `<env>-<site>-karpenter`; SQS allows 80.
SQS_QUEUE_MAX = 80
# clusters/sizing.py: a cloud site's GPU NodePool is `gpu-<type lower-cased>`.
NODEPOOL_PREFIX = "gpu-"


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a valid Kubernetes label value; None when it is."""
    if len(value) > 63:
        return f"{len(value)} characters, a label value has at most 63"
    if not LABEL_VALUE.match(value):
        return "a label value holds only letters, digits, '-', '_' and '.', and starts and ends with a letter or digit"
    return None


def object_name_problem(value: str, *, label: bool = True) -> str | None:
    """Why `value` is not a valid object name (DNS-1123 subdomain; also a label value when `label`)."""
    limit = 63 if label else 253
    if len(value) > limit:
        return f"{len(value)} characters, at most {limit}"
    if not DNS1123_SUBDOMAIN.match(value):
        return "an object name holds only lower-case letters, digits, '-' and '.', and starts and ends with a letter or digit"
    return None


def check_names(env: Environment) -> list[SpecIssue]:
    """Every spec value that becomes (part of) a Kubernetes or AWS name, checked as it ends up."""
    issues: list[SpecIssue] = []

    def add(path: Path, message: str) -> None:
        issues.append(SpecIssue(path=path, message=message))

    role_room = IAM_ROLE_MAX - PULUMI_AUTONAME_SUFFIX - max(len(s) for s in IAM_ROLE_SUFFIXES)
    for si, site in enumerate(env.sites):
        base: Path = ("sites", si)
        if isinstance(site, CloudSite):
            if len(site.name) > role_room:
                longest = max(IAM_ROLE_SUFFIXES, key=len)
                add(base + ("name",), f"cloud site name {site.name!r} is {len(site.name)} characters: its IAM role "
                                      f"'{site.name}{longest}-xxxxxxx' would pass AWS's {IAM_ROLE_MAX}; at most {role_room}")
            queue = f"{env.name}-{site.name}-karpenter"
            if len(queue) > SQS_QUEUE_MAX:
                add(base + ("name",), f"environment and site names make the SQS queue {queue!r} ({len(queue)} characters, "
                                      f"AWS allows {SQS_QUEUE_MAX}): shorten the site or the environment name")
            for zi, zone in enumerate(site.zones):
                why = label_value_problem(zone)
                if why:
                    add(base + ("zones", zi), f"zone {zone!r} is the node label {labels.ZONE}: {why}")
            for ii, it in enumerate(site.instance_types):
                why = label_value_problem(it.name)
                if why:
                    add(base + ("instance_types", ii, "name"), f"instance type {it.name!r} is the node label "
                                                               f"{labels.INSTANCE_TYPE}: {why}")
                if it.gpu:
                    _gpu_type(add, base + ("instance_types", ii, "gpu", "type"), it.gpu, nodepool=True)
        else:
            why = label_value_problem(site.network_zone)
            if why:
                add(base + ("network_zone",), f"network zone {site.network_zone!r} is the node label "
                                              f"{labels.NETWORK_ZONE}: {why}")
            for ri, rack in enumerate(site.racks):
                for hi, host in enumerate(rack.hosts):
                    if host.gpu:
                        _gpu_type(add, base + ("racks", ri, "hosts", hi, "gpu", "type"), host.gpu, nodepool=False)
                for pi, pool in enumerate(rack.host_pools):
                    if pool.gpu:
                        _gpu_type(add, base + ("racks", ri, "host_pools", pi, "gpu", "type"), pool.gpu, nodepool=False)
    for pi, p in enumerate(env.pipelines):
        served = getattr(p.engine, "served_model_name", None)
        if served is not None and not HEADER_SAFE.match(served):
            add(("pipelines", pi, "engine", "served_model_name"),
                f"served_model_name {served!r} goes into an HTTP header and a Prometheus label matcher: use letters, "
                "digits and . _ : / @ + - (no spaces or quotes), starting with a letter or digit")
    return issues


def _gpu_type(add: Callable[[Path, str], None], path: Path, gpu: GpuShape, *, nodepool: bool) -> None:
    why = label_value_problem(gpu.type)
    if why:
        add(path, f"GPU type {gpu.type!r} is the node label {labels.GPU_TYPE}: {why}")
        return
    product = labels.gpu_product(gpu.type)
    why = label_value_problem(product)
    if why:
        add(path, f"GPU type {gpu.type!r} makes the node label {labels.GPU_PRODUCT}={product!r}: {why}")
        return
    if nodepool:
        pool = NODEPOOL_PREFIX + gpu.type.lower()
        why = object_name_problem(pool)
        if why:
            add(path, f"GPU type {gpu.type!r} makes the Karpenter NodePool name {pool!r}: {why}")
