"""A site's share of the fleet PKI (workloads/render/fleet_ca.py): the fleet CA as cert-manager's ClusterIssuer,
the CA certificate the gateways verify peers with, and the gateway's listener and client certificates.

Every Secret and ConfigMap the gateway's listeners and BackendTLSPolicies name is created here or issued by
cert-manager from a Certificate made here (the `referents-exist` policy rule checks it)."""
from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from clusters.handle import ClusterHandle
from workloads.images import Charts
from workloads.kube import child_options, create
from workloads.render import fleet_ca, meta
from workloads.render.context import SiteContext
from workloads.render.gateway import GatewaySecrets


@dataclass
class FleetPkiArgs:
    cluster: ClusterHandle
    context: SiteContext
    environment: str
    seed: pulumi.Input[str]
    public_hosts: list[str] = field(default_factory=list)
    secrets: GatewaySecrets = field(default_factory=GatewaySecrets)
    charts: Charts = field(default_factory=Charts)
    install_cert_manager: bool = False
    """The pinned cert-manager Helm release (real clusters); simulated ones get its namespace and CRDs only, and
    their Certificates stay unissued (README "Prerequisites")."""


class FleetPki(pulumi.ComponentResource):
    issuer: str

    def __init__(self, name: str, args: FleetPkiArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:workloads:FleetPki", name, None, opts)
        ctx, s = args.context, args.secrets
        lbls = meta.labels("pki", "fleet-ca", instance=fleet_ca.CA_SECRET, site=ctx.site)
        ca = pulumi.Output.secret(args.seed).apply(lambda seed: fleet_ca.fleet_ca(seed, args.environment))
        chart = args.charts.cert_manager
        deps: list[pulumi.Resource] = []
        # a cloud cluster installs cert-manager itself (clusters/operators.py), namespace included: its `ready` covers it
        if "cert-manager" not in args.cluster.operators:
            deps.append(create(f"{name}-namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": fleet_ca.CERT_MANAGER_NAMESPACE, "labels": lbls | {"pod-security.kubernetes.io/enforce": "restricted"}}},
                child_options(self, args.cluster)))
        if args.install_cert_manager and "cert-manager" not in args.cluster.operators:
            deps.append(k8s.helm.v3.Release(
                f"{name}-cert-manager", name="cert-manager", chart=f"{chart.repo}/{chart.chart}", version=chart.version,
                namespace=fleet_ca.CERT_MANAGER_NAMESPACE, create_namespace=False, atomic=True, cleanup_on_fail=True, timeout=600,
                values={"crds": {"enabled": True}, "global": {"leaderElection": {"namespace": fleet_ca.CERT_MANAGER_NAMESPACE}}},
                opts=child_options(self, args.cluster, depends_on=list(deps))))
        secret = fleet_ca.ca_secret(fleet_ca.FleetCa("", ""), lbls)
        secret["stringData"] = pulumi.Output.secret(ca.apply(lambda c: {fleet_ca.TLS_CRT: c.cert_pem, fleet_ca.TLS_KEY: c.key_pem}))
        ca_secret = create(f"{name}-ca-secret", secret, child_options(self, args.cluster, depends_on=deps))
        issuer = create(f"{name}-issuer", fleet_ca.cluster_issuer(lbls), child_options(self, args.cluster, depends_on=[ca_secret]))
        ca_pem = pulumi.Output.unsecret(ca.apply(lambda c: c.cert_pem))
        create(f"{name}-fleet-ca", fleet_ca.ca_configmap(s.fleet_ca, ctx.gateway_namespace, "", lbls) | {"data": {fleet_ca.CA_CRT: ca_pem}},
               child_options(self, args.cluster))
        gw_lbls = meta.labels("gateway", "certificate", site=ctx.site)
        for cert in fleet_ca.gateway_certificates(ctx.fleet_host, args.public_hosts, ctx.gateway_namespace, gw_lbls,
                                                  public_tls=s.public_tls, fleet_tls=s.fleet_tls, fleet_client_tls=s.fleet_client_tls):
            create(f"{name}-{cert['metadata']['name']}", cert, child_options(self, args.cluster, depends_on=[issuer]))
        self.issuer = fleet_ca.FLEET_ISSUER
        self.register_outputs({"issuer": self.issuer, "ca_certificate": ca_pem})
