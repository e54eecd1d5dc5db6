"""Knobs of the serving stack that are not in the environment spec, with their defaults.

`deploy_workloads(..., options=WorkloadOptions(...))` overrides them per stack; the Pulumi program may
build this from stack config. Nothing here is secret except `secret_seed` (an Output from config).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from infra.labels import GATEWAY_NAMESPACE, MONITORING_NAMESPACE
from workloads.images import Charts, Images
from workloads.render.certificates import FLEET_ISSUER

AWS_PUBLIC_NLB = {
    "service.beta.kubernetes.io/aws-load-balancer-type": "external",
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing",
}
AWS_INTERNAL_NLB = {
    "service.beta.kubernetes.io/aws-load-balancer-type": "external",
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
}
METALLB_PUBLIC = {"metallb.universe.tf/address-pool": "public"}
METALLB_FLEET = {"metallb.universe.tf/address-pool": "fleet"}


@dataclass(frozen=True)
class WorkloadOptions:
    domain: str | None = None
    """DNS zone of the entry points: `<region>.<domain>` per user region, `<site>.fleet.<domain>` per site.
    Default `<environment>.hybridml.example`."""
    images: Images = field(default_factory=Images)
    charts: Charts = field(default_factory=Charts)
    secret_seed: object | None = None
    """pulumi.Input[str]: root of every derived credential (workloads.secrets). Default: stack config
    secret `hybridml:secretSeed`; a stack whose clusters are all simulated falls back to a fixed local seed."""
    install_controllers: bool | None = None
    """Helm releases of Envoy Gateway + Envoy AI Gateway. Default: on real clusters only (simulated/local
    clusters get only the CRDs)."""
    prometheus_url: str = f"http://prometheus-operated.{MONITORING_NAMESPACE}.svc.cluster.local:9090"
    """Prometheus that KEDA queries (installed with the monitoring stack by the cluster components)."""
    model_egress_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    """Where model servers may download weights from (HTTPS): object storage / model hub / mirror."""
    stream_egress_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    """Where Flink ingestion jobs reach the stream brokers (Kafka 9092/9093)."""
    storage_class: dict[str, str] = field(default_factory=dict)
    """Storage class per site kind ("cloud", "datacenter"); missing: the cluster default."""
    public_tls_secret: str = "public-tls"
    """Secret (cert-manager) with the certificate for `*.<domain>` in the gateway namespace."""
    fleet_tls_secret: str = "fleet-tls"
    """Secret with the certificate for `*.fleet.<domain>` (site-to-site listener)."""
    fleet_client_tls_secret: str = "fleet-client-tls"
    """Client certificate a gateway presents to other sites' fleet listeners (mTLS)."""
    fleet_ca_configmap: str = "fleet-ca"
    """ConfigMap (key ca.crt) with the fleet CA that signs fleet server and client certificates."""
    fleet_issuer: str = FLEET_ISSUER
    """The cert-manager ClusterIssuer of that CA: it issues every data store's TLS certificate and every data client's
    (workloads/render/certificates.py), as it does the gateways' fleet certificates above."""
    keda_namespace: str = "keda"
    gpu_operator_namespace: str = "gpu-operator"
    gateway_namespace: str = GATEWAY_NAMESPACE
    monitoring_namespace: str = MONITORING_NAMESPACE

    def zone(self, env_name: str) -> str:
        return self.domain or f"{env_name}.hybridml.example"

    def public_lb_annotations(self, site_kind: str) -> dict[str, str]:
        return dict(AWS_PUBLIC_NLB if site_kind == "cloud" else METALLB_PUBLIC)

    def internal_lb_annotations(self, site_kind: str) -> dict[str, str]:
        return dict(AWS_INTERNAL_NLB if site_kind == "cloud" else METALLB_FLEET)
