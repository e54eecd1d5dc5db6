"""The one vocabulary of node/pod labels for placement-relevant facts.

Cluster components label nodes with these, workloads select on them, datacenter
inventories put them on hosts, and policy rules read them. Define a key once, here.
"""
from __future__ import annotations

from collections.abc import Iterable

from infra.spec import PrivacyTier

PREFIX = "hybridml.io"

SITE = f"{PREFIX}/site"                  # spec site name
SITE_KIND = f"{PREFIX}/site-kind"        # cloud | datacenter
PRIVACY_ZONE = f"{PREFIX}/privacy-zone"  # most sensitive tier a node may hold
DATACENTER = f"{PREFIX}/datacenter"
RACK = f"{PREFIX}/rack"
PIPELINE = f"{PREFIX}/pipeline"
PRIVACY_TIER = f"{PREFIX}/privacy-tier"  # on workloads: the tier of the data they handle (a pipeline's effective tier)
DECLARED_PRIVACY_TIER = f"{PREFIX}/declared-privacy-tier"  # a pipeline's own tier, where what it reads raised it
SIMULATED = f"{PREFIX}/simulated"        # "true" on kwok nodes: GPUs and racks that are not real

REGION = "topology.kubernetes.io/region"
ZONE = "topology.kubernetes.io/zone"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
HOSTNAME = "kubernetes.io/hostname"
OS = "kubernetes.io/os"
ARCH = "kubernetes.io/arch"
CONTROL_PLANE_ROLE = "node-role.kubernetes.io/control-plane"
KARPENTER_NODEPOOL = "karpenter.sh/nodepool"
KARPENTER_CAPACITY_TYPE = "karpenter.sh/capacity-type"
KWOK_TYPE = "type"                       # kwok's stages select nodes labelled `type: kwok`
NODE_ROLE = f"{PREFIX}/node-role"
NODE_POOL = f"{PREFIX}/node-pool"
NETWORK_ZONE = f"{PREFIX}/network-zone"
GPU_TYPE = f"{PREFIX}/gpu-type"
GPU_COUNT = f"{PREFIX}/gpu-count"
LOCAL_MANAGED_BY = f"{PREFIX}/local-managed-by"   # nodes the local control planes own
LWS_ROLE = f"{PREFIX}/lws-role"          # leader | worker pod of a multi-node vLLM replica
KSERVE_ISVC = "serving.kserve.io/inferenceservice"   # the label KServe puts on predictor pods
GPU_PRODUCT = "nvidia.com/gpu.product"   # as set by NVIDIA GPU feature discovery
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT_KEY = "nvidia.com/gpu"
PRIVACY_TAINT_KEY = PRIVACY_ZONE         # pii/restricted nodes are tainted so only their tier lands there

# GPU type names used in specs -> the product string GPU feature discovery reports.
GPU_PRODUCTS = {
    "H100": "NVIDIA-H100-80GB-HBM3",
    "H200": "NVIDIA-H200",
    "A100": "NVIDIA-A100-SXM4-80GB",
    "A10G": "NVIDIA-A10G",
    "L4": "NVIDIA-L4",
    "L40S": "NVIDIA-L40S",
}


def gpu_product(gpu_type: str) -> str:
    return GPU_PRODUCTS.get(gpu_type, f"NVIDIA-{gpu_type}")


def namespace_for(tier: PrivacyTier | str) -> str:
    """Serving namespace of a privacy tier: one namespace per tier keeps NetworkPolicies and quotas per tier."""
    value = tier.value if isinstance(tier, PrivacyTier) else tier
    return f"ml-{value}"


GATEWAY_NAMESPACE = "hybridml-gateway"
MONITORING_NAMESPACE = "hybridml-monitoring"


def zones_allowed_for(tier: PrivacyTier) -> list[str]:
    """Node privacy zones that may run a workload of `tier` (a pii node also holds internal work)."""
    order = list(PrivacyTier)
    return [t.value for t in order[order.index(tier):]]


def home_zone(tier: PrivacyTier, zones_present: Iterable[PrivacyTier | str]) -> str | None:
    """The zone a workload of `tier` runs in at a datacenter with racks of `zones_present`: the least
    sensitive zone that may hold it. A pii rack could hold internal work too, but internal pods that
    spill onto pii racks (the scheduler packs whatever node scores best, and hard rack spread draws
    them onto every rack they may use) take the room the pii work can only find there; so each tier
    keeps to its home zone, and the placement counts capacity per zone the same way."""
    present = {z.value if isinstance(z, PrivacyTier) else z for z in zones_present}
    return next((z for z in zones_allowed_for(tier) if z in present), None)
