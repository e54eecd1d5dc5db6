"""What a datacenter cluster must already hold for the objects the program writes there, and what of it is missing.
Pure: the rendered objects (hybridml.ops.check.program_views) and a snapshot of the live cluster in, findings out;
`hybridml/ops/prerequisites_live.py` reads the snapshot, `hybridml preflight` prints.

A datacenter cluster is the platform team's: the program installs there only the gateway's controllers, cert-manager
and the GPU operator (infra/versions.py `on_datacenters`; on a simulated cluster nothing), so it needs beforehand:
- for every custom kind the program writes there and installs no release for, a CRD of that group and kind that is
  Established and serves the apiVersion written (and the API server's discovery lists it);
- every object the program's objects name and neither the program nor Kubernetes creates (the `referents-exist`
  rule's walk, policies/rules/referents.py: the README "Prerequisites" table);
- a default StorageClass, where a claim names no class;
- MetalLB's IPAddressPool of every `metallb.universe.tf/address-pool` a LoadBalancer Service asks for (a simulated
  cluster's load balancers are kwok's stage instead).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from infra.versions import OPERATORS, OperatorRelease, release_for_group
from policies.rules.base import ResourceView
from policies.rules.referents import BUILT_IN, CLUSTER_SCOPED, provided, references

# Groups Kubernetes serves itself: their kinds need no CRD.
BUILT_IN_GROUPS = frozenset({"", "core", "apps", "batch", "policy", "autoscaling", "rbac.authorization.k8s.io",
                             "networking.k8s.io", "scheduling.k8s.io", "storage.k8s.io", "coordination.k8s.io",
                             "admissionregistration.k8s.io", "apiextensions.k8s.io", "discovery.k8s.io",
                             "node.k8s.io", "certificates.k8s.io", "resource.k8s.io", "flowcontrol.apiserver.k8s.io"})
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
METALLB_POOL_ANNOTATION = "metallb.universe.tf/address-pool"
METALLB_POOL = ("metallb.io", "v1beta1", "IPAddressPool")
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


@dataclass(frozen=True)
class Requirement:
    """One thing a datacenter cluster must hold. `what`: crd | object | default-storage-class | address-pool."""

    site: str
    what: str
    group: str = ""
    version: str = ""
    kind: str = ""
    namespace: str | None = None
    name: str = ""
    needed_by: str = ""
    fix: str = ""

    @property
    def subject(self) -> str:
        if self.what == "crd":
            return f"CRD of {self.kind} ({self.group}/{self.version})"
        if self.what == "default-storage-class":
            return "a default StorageClass"
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclass
class ClusterSnapshot:
    """What the live cluster holds, as far as the requirements ask (prerequisites_live.read_snapshot)."""

    crds: dict[tuple[str, str], tuple[str, frozenset[str], bool]] = field(default_factory=dict)
    """(group, kind) -> (CRD name, versions it serves, Established)."""
    discovered: set[tuple[str, str]] = field(default_factory=set)        # (group/version, kind) the API server lists
    objects: set[tuple[str, str | None, str]] = field(default_factory=set)   # (kind, namespace, name) found
    default_storage_classes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Missing:
    requirement: Requirement
    reason: str


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _install_line(release: OperatorRelease | None, group: str) -> str:
    if release is None:
        return f"install the operator that serves API group {group}"
    version = release.operator_version or f"the release of CRD commit {release.crd_commit}"
    source = (f"Helm chart {release.chart} {release.version}" if release.chart
              else release.manifest or "its release")
    return f"install {release.name} {version} ({source}), or a release that serves this apiVersion"


def _installed_here(views: list[ResourceView]) -> set[tuple[str, str]]:
    """(group, kind) the program itself installs on the cluster: its Helm releases' kinds and its own CRDs."""
    out: set[tuple[str, str]] = set()
    for r in views:
        if r.type == HELM_RELEASE:
            row = OPERATORS.get(str(r.props.get("name") or ""))
            if row is not None:
                out |= {(g, "*") for g in row.groups}
        elif r.is_kubernetes and r.kind == "CustomResourceDefinition":
            spec = r.props.get("spec") or {}
            out.add((spec.get("group", ""), (spec.get("names") or {}).get("kind", "")))
    return out


def _claims_without_class(r: ResourceView) -> bool:
    spec = r.props.get("spec") or {}
    if r.kind == "PersistentVolumeClaim":
        return not spec.get("storageClassName")
    if r.kind == "StatefulSet":
        return any(not (t.get("spec") or {}).get("storageClassName") for t in spec.get("volumeClaimTemplates") or [])
    return False


def _address_pool(r: ResourceView) -> str | None:
    """The MetalLB pool a LoadBalancer Service asks for: its own annotation, or, for the gateways' proxies, the
    annotation Envoy Gateway copies onto the Service it makes from an EnvoyProxy."""
    if r.kind == "Service":
        annotations = r.metadata.get("annotations") or {}
    elif r.kind == "EnvoyProxy":
        service = (((r.props.get("spec") or {}).get("provider") or {}).get("kubernetes") or {}).get("envoyService") or {}
        annotations = service.get("annotations") or {}
    else:
        return None
    return annotations.get(METALLB_POOL_ANNOTATION)


def requirements(site: str, views: Iterable[ResourceView], *, simulated: bool = False) -> list[Requirement]:
    """Everything the objects the program writes on `site`'s cluster need from the cluster beforehand."""
    mine = [v for v in views if v.cluster == site]
    installed = _installed_here(mine)
    out: dict[tuple, Requirement] = {}
    for r in mine:
        if not r.is_kubernetes:
            continue
        api_version = str(r.props.get("apiVersion") or "")
        group, version = _group_version(api_version)
        if group not in BUILT_IN_GROUPS and (group, "*") not in installed and (group, r.kind) not in installed:
            release = release_for_group(group)
            out.setdefault(("crd", group, version, r.kind), Requirement(
                site, "crd", group, version, r.kind, needed_by=r.display, fix=_install_line(release, group)))
        if _claims_without_class(r):
            out.setdefault(("default-storage-class",), Requirement(
                site, "default-storage-class", "storage.k8s.io", "v1", "StorageClass", needed_by=r.display,
                fix=f"annotate a StorageClass `{DEFAULT_CLASS_ANNOTATION}: \"true\"` (for the model cache it must serve "
                    "ReadWriteMany: CephFS, NFS, ...)"))
        pool = _address_pool(r)
        if pool and not simulated:
            out.setdefault(("address-pool", pool), Requirement(
                site, "address-pool", METALLB_POOL[0], METALLB_POOL[1], METALLB_POOL[2], name=pool, needed_by=r.display,
                fix=f"install MetalLB and create IPAddressPool `{pool}` (with its L2Advertisement or BGPAdvertisement) "
                    "from the datacenter's routable range"))
    made = provided(mine).get(site, set())
    for r in mine:
        for ref in references(r):
            key = (ref.kind, None if ref.kind in CLUSTER_SCOPED else ref.namespace, ref.name)
            if not ref.name or key in made or (ref.kind, None, ref.name) in BUILT_IN:
                continue
            if ref.kind == "PriorityClass" and ref.name.startswith("system-"):
                continue
            out.setdefault(("object", *key), Requirement(
                site, "object", kind=ref.kind, namespace=key[1], name=ref.name,
                needed_by=f"{r.display} {ref.where}",
                fix=f"create {ref.kind} {ref.name}" + (f" in namespace {ref.namespace}" if ref.namespace else "")
                    + " (README \"Prerequisites\")"))
    return sorted(out.values(), key=lambda q: (q.what, q.group, q.kind, q.namespace or "", q.name))


def missing(reqs: Iterable[Requirement], snap: ClusterSnapshot) -> list[Missing]:
    """The requirements the snapshot does not meet, each with why."""
    out: list[Missing] = []
    for q in reqs:
        if q.what == "crd":
            crd = snap.crds.get((q.group, q.kind))
            if crd is None:
                out.append(Missing(q, f"no CRD serves {q.kind} in group {q.group}"))
            elif q.version not in crd[1]:
                out.append(Missing(q, f"CRD {crd[0]} serves {', '.join(sorted(crd[1])) or 'no version'}, "
                                      f"not {q.version}"))
            elif not crd[2]:
                out.append(Missing(q, f"CRD {crd[0]} is not Established"))
            elif (f"{q.group}/{q.version}", q.kind) not in snap.discovered:
                out.append(Missing(q, f"the API server's discovery does not list {q.kind} in {q.group}/{q.version}"))
        elif q.what == "default-storage-class":
            if not snap.default_storage_classes:
                out.append(Missing(q, "no StorageClass is marked default"))
        elif q.what == "address-pool":
            if not any(k == q.kind and n == q.name for k, _, n in snap.objects):
                out.append(Missing(q, f"no IPAddressPool named {q.name} (in any namespace)"))
        elif (q.kind, q.namespace, q.name) not in snap.objects:
            out.append(Missing(q, "not found"))
    return out
