"""What a cluster component hands to the workloads: the contract between clusters/ and workloads/."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pulumi


@dataclass
class ClusterHandle:
    """One Kubernetes cluster the plan uses.

    Contract: `provider` targets exactly this cluster; the per-tier serving namespaces
    (infra.labels.namespace_for) plus the gateway and monitoring namespaces exist once
    `ready` resources are created (workloads pass them as depends_on); nodes carry the
    infra.labels keys for site, privacy zone and GPU product.
    """

    site: str
    kind: Literal["cloud", "datacenter"]
    provider: pulumi.ProviderResource
    simulated: bool = False                          # kwok nodes: GPUs/racks simulated
    gpu_types: list[str] = field(default_factory=list)  # GPU types this cluster's nodes offer
    privacy_tiers: list[str] = field(default_factory=list)  # tiers the site may hold
    ready: list[pulumi.Resource] = field(default_factory=list)  # namespaces, CRDs, controllers
    endpoint: pulumi.Output[str] | str | None = None
    # How another stack reaches this cluster (the fleet stack of a sharded environment, issue 8):
    # a kubeconfig (its contents as a secret, or a file path for local clusters) and its context.
    kubeconfig: pulumi.Input[str] | None = None
    context: str | None = None
    operators: frozenset[str] = frozenset()
    """Operators of infra/versions.py the cluster component installed (clusters/operators.py), ready once `ready`
    is: the workloads install none of them again (cert-manager on a cloud site, whose KServe and Flink webhooks
    need it before the workloads run)."""
