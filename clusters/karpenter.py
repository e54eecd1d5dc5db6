"""Karpenter NodePool and EC2NodeClass manifests from a NodePoolPlan. Pure: plain dicts.

Kept out of the component so the manifests can be validated against the upstream CRD schemas
(/work/shared/crds, tests/clusters/test_karpenter_manifests.py) without a Pulumi runtime.
"""
from __future__ import annotations

from typing import Any

from clusters.sizing import NodePoolPlan
from infra.versions import chart_version

# Pinned, overridable per stack (config hybridml:karpenterChartVersion). The CRDs the manifests are
# validated against (shared/crds, karpenter.sh/v1 + karpenter.k8s.aws/v1) match this release line.
KARPENTER_CHART = "oci://public.ecr.aws/karpenter/karpenter"
KARPENTER_CHART_VERSION = chart_version("karpenter")   # infra/versions.py, the one table
KARPENTER_NAMESPACE = "kube-system"     # upstream's recommendation: system-critical, beside CoreDNS
KARPENTER_SERVICE_ACCOUNT = "karpenter"
# Pinned AMI release (not @latest, which drifts every node on each AMI release). Karpenter picks
# the NVIDIA variant of AL2023 by itself for GPU instance types.
AMI_ALIAS = "al2023@v20251023"

DISCOVERY_TAG = "karpenter.sh/discovery"


def node_class_name(pool: NodePoolPlan) -> str:
    return pool.name


def ec2_node_class(pool: NodePoolPlan, *, cluster_name: Any, node_role: Any, tags: dict[str, str],
                   ami_alias: str = AMI_ALIAS) -> dict:
    """EC2NodeClass spec: private subnets and the node security group by discovery tag, IMDSv2 with
    hop limit 1 (pods cannot reach the node's role credentials), encrypted gp3 root volume, no
    public IPs. `cluster_name`/`node_role` may be Pulumi outputs."""
    return {
        "role": node_role,
        "amiSelectorTerms": [{"alias": ami_alias}],
        "subnetSelectorTerms": [{"tags": {DISCOVERY_TAG: cluster_name, "hybridml.io/subnet-role": "private"}}],
        "securityGroupSelectorTerms": [{"tags": {DISCOVERY_TAG: cluster_name}}],
        "associatePublicIPAddress": False,
        "metadataOptions": {
            "httpEndpoint": "enabled",
            "httpProtocolIPv6": "disabled",
            "httpPutResponseHopLimit": 1,
            "httpTokens": "required",
        },
        "blockDeviceMappings": [{
            "deviceName": "/dev/xvda",
            "ebs": {"volumeSize": f"{pool.volume_gib}Gi", "volumeType": "gp3", "encrypted": True,
                    "deleteOnTermination": True},
        }],
        "detailedMonitoring": True,
        "tags": dict(tags),
    }


def node_pool(pool: NodePoolPlan) -> dict:
    """NodePool spec: only the instance types the plan chose, in the site's zones and capacity types;
    GPU pools tainted `nvidia.com/gpu` so only GPU pods land there; limits from the plan."""
    requirements = [
        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": list(pool.instance_types)},
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": list(pool.capacity_types)},
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": list(pool.zones)},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    ]
    limits: dict[str, Any] = {"cpu": str(pool.limit_cpu), "memory": f"{pool.limit_memory_gib}Gi"}
    if pool.gpu_type:
        limits["nvidia.com/gpu"] = str(pool.limit_gpus)
    return {
        "template": {
            "metadata": {"labels": dict(pool.labels)},
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": node_class_name(pool)},
                "requirements": requirements,
                "taints": [{"key": k, "value": v, "effect": e} for k, v, e in pool.taints],
                # GPU nodes are replaced at most monthly (AMI/driver updates); model servers take minutes to load.
                "expireAfter": "720h",
                "terminationGracePeriod": "1h",
            },
        },
        "disruption": {
            # GPU pools only consolidate empty nodes: moving a loaded LLM replica costs minutes of capacity.
            "consolidationPolicy": "WhenEmpty" if pool.gpu_type else "WhenEmptyOrUnderutilized",
            "consolidateAfter": "10m" if pool.gpu_type else "2m",
            "budgets": [{"nodes": "10%"}],
        },
        "limits": limits,
        # CPU pool weighs less so the GPU pools are never used for CPU-only pods (they are tainted too).
        "weight": 10 if pool.gpu_type else 1,
    }
