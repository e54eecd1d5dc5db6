"""What every cluster gets, as plain data: namespaces (with Pod Security labels) and priority classes.

Pure (no Pulumi): `ClusterBaseline` (clusters/kube_baseline.py) turns these into objects, and the
workloads read the names from here (priority class names are part of the clusters/workloads contract).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from infra import labels
from infra.spec import PrivacyTier

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "hybridml"

# Pod Security Standards: the serving namespaces enforce `restricted`. The version is pinned to the
# cluster's minor so a control-plane upgrade cannot silently tighten (and break) running workloads.
PSS_ENFORCE = "pod-security.kubernetes.io/enforce"
PSS_ENFORCE_VERSION = "pod-security.kubernetes.io/enforce-version"
PSS_AUDIT = "pod-security.kubernetes.io/audit"
PSS_WARN = "pod-security.kubernetes.io/warn"

# The one documented exemption: the NVIDIA GPU operator's daemonsets (driver/toolkit validators,
# device plugin, DCGM exporter) mount host paths and /dev and run privileged by design, so
# their namespace enforces `privileged`. Nothing else is deployed there (the workloads never use it).
GPU_OPERATOR_NAMESPACE = "gpu-operator"
PSS_EXEMPTION_REASON = ("NVIDIA GPU operator: device plugin, GFD and DCGM exporter need hostPath, /dev and "
                        "privileged containers; only the operator's own pods run here")

# Priority classes (names are the contract with workloads/):
PRIORITY_PLATFORM = "hybridml-platform"   # gateway, monitoring: losing them loses every pipeline
PRIORITY_DATA = "hybridml-data"           # online stores (Redis, Qdrant): pipelines read them on the hot path
PRIORITY_SERVING = "hybridml-serving"     # production replicas
PRIORITY_SHADOW = "hybridml-shadow"       # shadow targets and canaries: first to go, never preempt
PRIORITY_BATCH = "hybridml-batch"         # batch workers on the room the online peak leaves: online pods preempt them


@dataclass(frozen=True)
class NamespaceSpec:
    name: str
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    tier: str | None = None         # serving namespaces: the privacy tier they hold


@dataclass(frozen=True)
class PriorityClassSpec:
    name: str
    value: int
    description: str
    preempting: bool = True


PRIORITY_CLASSES: tuple[PriorityClassSpec, ...] = (
    PriorityClassSpec(PRIORITY_PLATFORM, 1_000_000, "hybridml gateway and monitoring."),
    PriorityClassSpec(PRIORITY_DATA, 500_000, "hybridml online feature stores and vector databases."),
    PriorityClassSpec(PRIORITY_SERVING, 100_000, "hybridml production inference replicas."),
    PriorityClassSpec(PRIORITY_SHADOW, 1_000, "hybridml shadow and canary replicas; never preempt others.",
                      preempting=False),
    PriorityClassSpec(PRIORITY_BATCH, 500, "hybridml batch pipelines (Ray) on capacity the online peak leaves; "
                      "never preempt others, preempted first.", preempting=False),
)


def _pss(level: str, version: str) -> dict[str, str]:
    return {PSS_ENFORCE: level, PSS_ENFORCE_VERSION: version, PSS_AUDIT: "restricted", PSS_WARN: "restricted"}


def pss_version(kubernetes_version: str | None) -> str:
    """`v1.33` for a cluster on 1.33; `latest` when the version is not known (on-prem, local)."""
    return f"v{kubernetes_version}" if kubernetes_version else "latest"


def namespaces(site: str, tiers: list[PrivacyTier], *, gpu_operator: bool,
               kubernetes_version: str | None = None) -> list[NamespaceSpec]:
    """Tier namespaces for the tiers the site may hold, the gateway and monitoring namespaces, and
    (where the cluster runs the GPU operator) its documented `privileged` exemption."""
    version = pss_version(kubernetes_version)
    common = {MANAGED_BY: MANAGED_BY_VALUE, labels.SITE: site}
    out = [NamespaceSpec(labels.namespace_for(t), {**common, **_pss("restricted", version),
                                                  labels.PRIVACY_TIER: t.value}, tier=t.value)
           for t in sorted(set(tiers), key=lambda t: t.rank)]
    out.append(NamespaceSpec(labels.GATEWAY_NAMESPACE, {**common, **_pss("restricted", version)}))
    out.append(NamespaceSpec(labels.MONITORING_NAMESPACE, {**common, **_pss("restricted", version)}))
    if gpu_operator:
        out.append(NamespaceSpec(GPU_OPERATOR_NAMESPACE, {**common, **_pss("privileged", version)},
                                 annotations={"hybridml.io/pss-exemption": PSS_EXEMPTION_REASON}))
    return out


# Default requests for containers that set none: a ResourceQuota on requests.* rejects such pods
# outright, and a LimitRange default keeps e.g. a debugging pod schedulable within the quota.
LIMIT_RANGE_DEFAULT_REQUEST = {"cpu": "100m", "memory": "128Mi"}
