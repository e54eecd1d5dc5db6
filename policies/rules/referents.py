"""Every name a rendered object refers to exists on its cluster: the program creates it, Kubernetes itself
does (the `default` ServiceAccount, `kube-root-ca.crt`, built-in ClusterRoles, system PriorityClasses), or the
README names it as a prerequisite of that kind of cluster (`PREREQUISITES`).

An API server admits a Deployment whose Secret does not exist; its pods then never start. This rule is the
offline walk the admission step does not do. Pure: no Pulumi, no I/O.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from policies.rules.base import Context, Enforcement, ResourceView, Rule, Severity
from policies.rules.podspec import pod_specs

CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "StorageClass", "GatewayClass", "ClusterIssuer",
                            "ClusterServingRuntime", "PriorityClass", "CustomResourceDefinition"})

# Objects Kubernetes makes by itself, in every namespace (None) or cluster-wide.
BUILT_IN: frozenset[tuple[str, str | None, str]] = frozenset({
    ("ServiceAccount", None, "default"),
    ("ConfigMap", None, "kube-root-ca.crt"),
    ("Namespace", None, "default"), ("Namespace", None, "kube-system"), ("Namespace", None, "kube-public"),
    ("ClusterRole", None, "view"), ("ClusterRole", None, "edit"), ("ClusterRole", None, "admin"),
    ("ClusterRole", None, "cluster-admin"),
    ("PriorityClass", None, "system-node-critical"), ("PriorityClass", None, "system-cluster-critical"),
})


@dataclass(frozen=True)
class Prerequisite:
    """An object the cluster must hold before `pulumi up`; README "Prerequisites" lists each one."""

    kind: str
    name: str
    site_kind: str      # cloud | datacenter | any
    why: str


PREREQUISITES: tuple[Prerequisite, ...] = (
    Prerequisite("ClusterIssuer", "hybridml-public", "any",
                 "issues the public listeners' certificate (`<region>.<domain>`) from a CA the users' clients trust: an ACME "
                 "issuer with a DNS-01 solver for the zone, or the organisation's own; the private fleet CA must not"),
    Prerequisite("StorageClass", "hybridml-local", "any",
                 "the local control planes' host-path class, made by `hybridml local up` (the local stack's simulated "
                 "clusters name it; real clusters use their default or WorkloadOptions.storage_class)"),
)


@dataclass(frozen=True)
class Reference:
    kind: str
    namespace: str | None      # None for cluster-scoped kinds
    name: str
    where: str                 # the field that names it


def _ns(r: ResourceView) -> str | None:
    ns = r.metadata.get("namespace")
    return ns if isinstance(ns, str) else None


def _pod_refs(spec: dict[str, Any], where: str, ns: str | None) -> Iterator[Reference]:
    sa = spec.get("serviceAccountName")
    if sa:
        yield Reference("ServiceAccount", ns, sa, f"{where}.serviceAccountName")
    pc = spec.get("priorityClassName")
    if pc:
        yield Reference("PriorityClass", None, pc, f"{where}.priorityClassName")
    for i, ips in enumerate(spec.get("imagePullSecrets") or []):
        if isinstance(ips, dict) and ips.get("name"):
            yield Reference("Secret", ns, ips["name"], f"{where}.imagePullSecrets[{i}]")
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        at = f"{where}.volumes[{v.get('name')}]"
        if isinstance(v.get("secret"), dict) and not v["secret"].get("optional"):
            yield Reference("Secret", ns, v["secret"].get("secretName", ""), at)
        if isinstance(v.get("configMap"), dict) and not v["configMap"].get("optional"):
            yield Reference("ConfigMap", ns, v["configMap"].get("name", ""), at)
        if isinstance(v.get("persistentVolumeClaim"), dict):
            yield Reference("PersistentVolumeClaim", ns, v["persistentVolumeClaim"].get("claimName", ""), at)
        template = ((v.get("ephemeral") or {}).get("volumeClaimTemplate") or {}).get("spec") or {}
        if template.get("storageClassName"):
            yield Reference("StorageClass", None, template["storageClassName"], at)
        for j, src in enumerate((v.get("projected") or {}).get("sources") or []):
            for kind, key in (("Secret", "secret"), ("ConfigMap", "configMap")):
                if isinstance(src.get(key), dict) and not src[key].get("optional"):
                    yield Reference(kind, ns, src[key].get("name", ""), f"{at}.projected.sources[{j}]")
    for ckind in ("containers", "initContainers"):
        for c in spec.get(ckind) or []:
            if not isinstance(c, dict):
                continue
            at = f"{where}.{ckind}[{c.get('name')}]"
            for e in c.get("env") or []:
                src = (e or {}).get("valueFrom") or {}
                for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    ref = src.get(key)
                    if isinstance(ref, dict) and not ref.get("optional"):
                        yield Reference(kind, ns, ref.get("name", ""), f"{at}.env[{e.get('name')}]")
            for e in c.get("envFrom") or []:
                for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                    ref = (e or {}).get(key)
                    if isinstance(ref, dict) and not ref.get("optional"):
                        yield Reference(kind, ns, ref.get("name", ""), f"{at}.envFrom")


def _object_refs(r: ResourceView) -> Iterator[Reference]:
    """References outside pod templates, by kind."""
    spec = r.props.get("spec") or {}
    ns = _ns(r)
    kind = r.kind
    if kind == "Gateway":
        yield Reference("GatewayClass", None, spec.get("gatewayClassName", ""), "spec.gatewayClassName")
        for listener in spec.get("listeners") or []:
            for ref in ((listener.get("tls") or {}).get("certificateRefs") or []):
                if ref.get("kind", "Secret") == "Secret":
                    yield Reference("Secret", ref.get("namespace", ns), ref["name"], f"spec.listeners[{listener.get('name')}].tls")
    elif kind in ("HTTPRoute", "GRPCRoute"):
        for parent in spec.get("parentRefs") or []:
            if parent.get("kind", "Gateway") == "Gateway":
                yield Reference("Gateway", parent.get("namespace", ns), parent["name"], "spec.parentRefs")
        for i, rule in enumerate(spec.get("rules") or []):
            for ref in rule.get("backendRefs") or []:
                if ref.get("kind", "Service") == "Service" and ref.get("group", "") == "":
                    yield Reference("Service", ref.get("namespace", ns), ref["name"], f"spec.rules[{i}].backendRefs")
                elif ref.get("kind") == "Backend":
                    yield Reference("Backend", ref.get("namespace", ns), ref["name"], f"spec.rules[{i}].backendRefs")
    elif kind == "SecurityPolicy":
        for ref in ((spec.get("apiKeyAuth") or {}).get("credentialRefs") or []):
            if ref.get("kind", "Secret") == "Secret":
                yield Reference("Secret", ref.get("namespace", ns), ref["name"], "spec.apiKeyAuth.credentialRefs")
    elif kind == "BackendTLSPolicy":
        for ref in ((spec.get("validation") or {}).get("caCertificateRefs") or []):
            yield Reference(ref.get("kind", "ConfigMap"), ns, ref["name"], "spec.validation.caCertificateRefs")
    elif kind in ("Certificate",):
        issuer = spec.get("issuerRef") or {}
        ikind = issuer.get("kind", "Issuer")
        yield Reference(ikind, None if ikind == "ClusterIssuer" else ns, issuer.get("name", ""), "spec.issuerRef")
    elif kind == "RoleBinding" or kind == "ClusterRoleBinding":
        role = r.props.get("roleRef") or {}
        yield Reference(role.get("kind", "Role"), None if role.get("kind") == "ClusterRole" else ns, role.get("name", ""), "roleRef")
        for s in r.props.get("subjects") or []:
            if s.get("kind") == "ServiceAccount":
                yield Reference("ServiceAccount", s.get("namespace", ns), s.get("name", ""), "subjects")
    elif kind == "ScaledObject":
        target = spec.get("scaleTargetRef") or {}
        yield Reference(target.get("kind", "Deployment"), ns, target.get("name", ""), "spec.scaleTargetRef")
        for i, trig in enumerate(spec.get("triggers") or []):
            auth = trig.get("authenticationRef")
            if auth:
                yield Reference(auth.get("kind", "TriggerAuthentication"), ns, auth.get("name", ""), f"spec.triggers[{i}].authenticationRef")
    elif kind == "TriggerAuthentication":
        for ref in spec.get("secretTargetRef") or []:
            yield Reference("Secret", ns, ref.get("name", ""), "spec.secretTargetRef")
    elif kind in ("StatefulSet",):
        for t in spec.get("volumeClaimTemplates") or []:
            sc = (t.get("spec") or {}).get("storageClassName")
            if sc:
                yield Reference("StorageClass", None, sc, "spec.volumeClaimTemplates")
    elif kind == "PersistentVolumeClaim" and spec.get("storageClassName"):
        yield Reference("StorageClass", None, spec["storageClassName"], "spec.storageClassName")
    elif kind == "InferenceService":
        predictor = spec.get("predictor") or {}
        runtime = (predictor.get("model") or {}).get("runtime")
        if runtime:
            yield Reference("ServingRuntime", ns, runtime, "spec.predictor.model.runtime")
    if ns is not None and kind != "Namespace":
        yield Reference("Namespace", None, ns, "metadata.namespace")


def references(r: ResourceView) -> Iterator[Reference]:
    """Every object `r` names, by kind, namespace (None: cluster-scoped) and name."""
    if not r.is_kubernetes:
        return
    ns = _ns(r)
    for where, _, spec in pod_specs(r.kind, r.props):
        yield from _pod_refs(spec, where, ns)
    yield from _object_refs(r)


def _key(kind: str, ns: str | None, name: str) -> tuple[str, str | None, str]:
    return (kind, None if kind in CLUSTER_SCOPED else ns, name)


def provided(resources: Iterable[ResourceView]) -> dict[str | None, set[tuple[str, str | None, str]]]:
    """What the program creates, per cluster."""
    out: dict[str | None, set[tuple[str, str | None, str]]] = {}
    for r in resources:
        if r.is_kubernetes and r.metadata.get("name"):
            made = out.setdefault(r.cluster, set())
            made.add(_key(r.kind, _ns(r), r.metadata["name"]))
            if r.kind == "Certificate" and (r.props.get("spec") or {}).get("secretName"):
                made.add(_key("Secret", _ns(r), r.props["spec"]["secretName"]))   # cert-manager issues it
    return out


def spec_prerequisites(env: Any) -> list[Prerequisite]:
    """Prerequisites the spec names: a datacenter's object store credentials (`object_store.credentials_secret`)."""
    out = []
    for dc in getattr(env, "datacenters", []) if env is not None else []:
        store = getattr(dc, "object_store", None)
        if store is not None:
            out.append(Prerequisite("Secret", store.credentials_secret, "datacenter",
                                    f"credentials of {dc.name}'s own object store (Flink state of sensitive views)"))
    return out


def _prerequisite(kind: str, name: str, site_kind: str | None, extra: list[Prerequisite]) -> bool:
    return any(p.kind == kind and p.name == name and p.site_kind in ("any", site_kind) for p in (*PREREQUISITES, *extra))


def missing_referents(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str, str]]:
    made = provided(resources)
    extra = spec_prerequisites(ctx.env)
    for r in resources:
        if not r.is_kubernetes:
            continue
        have = made.get(r.cluster, set())
        site = ctx.sites.get(r.cluster) if r.cluster else None
        for ref in references(r):
            key = _key(ref.kind, ref.namespace, ref.name)
            if not ref.name or key in have or (ref.kind, None, ref.name) in BUILT_IN:
                continue
            if ref.kind == "PriorityClass" and ref.name.startswith("system-"):
                continue
            if _prerequisite(ref.kind, ref.name, site.kind if site else None, extra):
                continue
            where = f"{ref.namespace}/" if key[1] else ""
            yield (r.display, f"{ref.where} names {ref.kind} {where}{ref.name}, which nothing creates on "
                              f"{r.cluster or 'its cluster'} and README \"Prerequisites\" does not list", r.cluster or "")


RULES = [
    Rule("referents-exist", "Every Secret, ConfigMap, ServiceAccount, namespace, GatewayClass, Service, StorageClass, "
         "issuer and policy target an object names exists on its cluster or is a named prerequisite.",
         Severity.high, Enforcement.mandatory,
         "create the referent in the program (same cluster), or add it to PREREQUISITES and README \"Prerequisites\"",
         stack_check=missing_referents, group="kubernetes"),
]
