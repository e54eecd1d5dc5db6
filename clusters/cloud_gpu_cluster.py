"""One cloud GPU region: VPC, private EKS, Karpenter GPU pools, the NVIDIA stack, the cluster baseline.

Security properties (each tested in tests/clusters/test_cloud_gpu_cluster.py):
- nodes only in private subnets; nothing maps public IPs on launch; the only public address is
  each NAT gateway's EIP (egress only);
- EKS API endpoint private; public only when the spec lists `api_allowed_cidrs` (and then only to them);
  the API security group admits 443 from the VPC CIDR only (no 0.0.0.0/0 ingress anywhere; the
  VPC's default security group is emptied);
- Kubernetes secrets envelope-encrypted with a per-cluster KMS key (rotation on); all five
  control-plane log types to CloudWatch;
- IMDSv2 required with hop limit 1 on every node (launch template and EC2NodeClass), encrypted
  gp3 root volumes;
- controllers (Karpenter, VPC CNI, EBS CSI, EFS CSI, external-dns) and the model servers use EKS Pod Identity
  roles with scoped policies (external-dns: records under the environment's domain in its hosted zone; model
  servers: read-only, exactly the S3 model prefixes of the pipelines placed in their namespace);
- the model cache (clusters/model_access.py) is an encrypted EFS file system, reachable on NFS from the VPC only.

The Pulumi runner reaches a private endpoint from inside the VPC (CI runner, VPN or peering), or
through `api_allowed_cidrs`. The Kubernetes provider authenticates with `aws eks get-token`.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from clusters import dns, iam
from clusters.baseline import MANAGED_BY, MANAGED_BY_VALUE, PSS_AUDIT, PSS_ENFORCE, PSS_WARN
from clusters.baseline import namespaces as baseline_namespaces
from clusters.gpu_stack import GPU_OPERATOR_CHART_VERSION, NvidiaGpuStack, NvidiaGpuStackArgs
from clusters.handle import ClusterHandle
from clusters.karpenter import (
    AMI_ALIAS,
    DISCOVERY_TAG,
    KARPENTER_CHART,
    KARPENTER_CHART_VERSION,
    KARPENTER_NAMESPACE,
    KARPENTER_SERVICE_ACCOUNT,
    ec2_node_class,
    node_pool,
)
from clusters.kube_baseline import ClusterBaseline, ClusterBaselineArgs, cluster_facts, readiness_gate
from clusters.kuberay import KubeRayOperator, KubeRayOperatorArgs
from clusters.model_access import MODEL_CACHE_CLASS, MODEL_CACHE_UID, MODEL_SERVICE_ACCOUNT
from clusters.operator_values import LOAD_BALANCER_SERVICE_ACCOUNT
from clusters.operators import PlatformOperators, PlatformOperatorsArgs
from clusters.sizing import (
    KARPENTER_CPU,
    KARPENTER_MEMORY_GIB,
    KARPENTER_REPLICAS,
    NodePoolPlan,
    QuotaPlan,
    SubnetPlan,
    SystemPoolPlan,
    site_tiers,
    system_pool,
)
from infra import labels
from infra.spec import CloudSite

LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
SYSTEM_NODE_LABEL = labels.NODE_ROLE
STORAGE_CLASS = "gp3-encrypted"   # the default class: the data stores' volumes, Prometheus's


@dataclass
class CloudGpuClusterArgs:
    environment: str
    site: CloudSite
    subnets: list[SubnetPlan]           # clusters.sizing.subnet_plan
    node_pools: list[NodePoolPlan]      # clusters.sizing.node_pools
    quotas: list[QuotaPlan]             # clusters.sizing.namespace_quotas
    karpenter_chart_version: str = KARPENTER_CHART_VERSION
    gpu_operator_chart_version: str = GPU_OPERATOR_CHART_VERSION
    ami_alias: str = AMI_ALIAS
    system_pool: SystemPoolPlan | None = None
    """The platform's managed node group (clusters.sizing.system_pool_plan: add-ons, operators, gateway proxies,
    monitoring, the data stores placed here); None: sized from `node_pools` alone, without data stores."""
    log_retention_days: int = 90
    tags: dict[str, str] = field(default_factory=dict)
    dns_zone: dns.HostedZone | None = None
    """Where external-dns publishes the gateways' and data stores' hostnames (None: no external-dns)."""
    model_reads: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Serving namespace -> the s3:// model URIs its model servers read (clusters.model_access.s3_model_reads): one
    read-only Pod Identity role per namespace for its `model-server` ServiceAccount."""

    @property
    def cluster_name(self) -> str:
        return f"{self.environment}-{self.site.name}"


def kubeconfig_for(cluster_name: str, region: str, endpoint: str, ca_data: str) -> str:
    """Kubeconfig authenticating with `aws eks get-token`: no long-lived token lands in the state."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": cluster_name,
        "clusters": [{"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
        "users": [{"name": cluster_name, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region, "--output", "json"]}}}],
    })


class CloudGpuCluster(pulumi.ComponentResource):
    handle: ClusterHandle
    endpoint: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]

    def __init__(self, name: str, args: CloudGpuClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hybridml:clusters:CloudGpuCluster", name, None, opts)
        site = args.site
        cluster_name = args.cluster_name
        tags = {"hybridml.io/environment": args.environment, labels.SITE: site.name, **args.tags}
        owned = {f"kubernetes.io/cluster/{cluster_name}": "owned"}

        self.aws_provider = aws.Provider(f"{name}-aws", region=site.region, default_tags={"tags": tags},
                                         opts=pulumi.ResourceOptions(parent=self))
        a = pulumi.ResourceOptions(parent=self, provider=self.aws_provider)

        # ---- encryption key and logs (created before the cluster so EKS never logs to an unmanaged group)
        key = aws.kms.Key(f"{name}-kms", description=f"EKS secrets envelope encryption for {cluster_name}",
                          enable_key_rotation=True, deletion_window_in_days=30, opts=a)
        aws.kms.Alias(f"{name}-kms-alias", name=f"alias/hybridml/{cluster_name}", target_key_id=key.key_id, opts=a)
        log_group = aws.cloudwatch.LogGroup(f"{name}-control-plane-logs", name=f"/aws/eks/{cluster_name}/cluster",
                                            retention_in_days=args.log_retention_days, opts=a)

        # ---- network: private subnets for nodes, small public subnets only for the NAT gateways
        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=site.vpc_cidr, enable_dns_hostnames=True,
                          enable_dns_support=True, tags={"Name": cluster_name}, opts=a)
        # The default security group allows all traffic between its members; empty it (CIS 5.4).
        aws.ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=vpc.id, ingress=[], egress=[], opts=a)
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, opts=a)
        public_rt = aws.ec2.RouteTable(f"{name}-public-rt", vpc_id=vpc.id,
                                       routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": igw.id}], opts=a)
        private_subnets, private_rts = [], []
        for sn in args.subnets:
            public = aws.ec2.Subnet(
                f"{name}-public-{sn.zone}", vpc_id=vpc.id, cidr_block=sn.public_cidr, availability_zone=sn.zone,
                map_public_ip_on_launch=False,
                tags={"Name": f"{cluster_name}-public-{sn.zone}", "hybridml.io/subnet-role": "public-nat",
                      "kubernetes.io/role/elb": "1"}, opts=a)
            aws.ec2.RouteTableAssociation(f"{name}-public-rta-{sn.zone}", subnet_id=public.id,
                                          route_table_id=public_rt.id, opts=a)
            # One NAT per zone: a zone outage must not cut the other zones' egress (image pulls, S3 models).
            eip = aws.ec2.Eip(f"{name}-nat-eip-{sn.zone}", domain="vpc", opts=a)
            nat = aws.ec2.NatGateway(f"{name}-nat-{sn.zone}", allocation_id=eip.allocation_id, subnet_id=public.id,
                                     opts=pulumi.ResourceOptions(parent=self, provider=self.aws_provider,
                                                                 depends_on=[igw]))
            private = aws.ec2.Subnet(
                f"{name}-private-{sn.zone}", vpc_id=vpc.id, cidr_block=sn.private_cidr, availability_zone=sn.zone,
                map_public_ip_on_launch=False,
                tags={"Name": f"{cluster_name}-private-{sn.zone}", "hybridml.io/subnet-role": "private",
                      "kubernetes.io/role/internal-elb": "1", DISCOVERY_TAG: cluster_name, **owned}, opts=a)
            rt = aws.ec2.RouteTable(f"{name}-private-rt-{sn.zone}", vpc_id=vpc.id,
                                    routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}], opts=a)
            aws.ec2.RouteTableAssociation(f"{name}-private-rta-{sn.zone}", subnet_id=private.id,
                                          route_table_id=rt.id, opts=a)
            private_subnets.append(private)
            private_rts.append(rt)
        # Model artifacts come from S3: a gateway endpoint keeps that traffic off the NAT (cost, bandwidth).
        aws.ec2.VpcEndpoint(f"{name}-s3-endpoint", vpc_id=vpc.id, service_name=f"com.amazonaws.{site.region}.s3",
                            vpc_endpoint_type="Gateway", route_table_ids=[rt.id for rt in private_rts], opts=a)
        api_sg = aws.ec2.SecurityGroup(f"{name}-api-sg", vpc_id=vpc.id,
                                       description=f"EKS API access for {cluster_name} from inside the VPC", opts=a)
        aws.vpc.SecurityGroupIngressRule(f"{name}-api-ingress", security_group_id=api_sg.id, ip_protocol="tcp",
                                         from_port=443, to_port=443, cidr_ipv4=site.vpc_cidr,
                                         description="Kubernetes API from the VPC (runners, VPN, peering)", opts=a)

        # ---- IAM
        cluster_role = aws.iam.Role(f"{name}-cluster-role", assume_role_policy=iam.assume_role("eks.amazonaws.com"),
                                    opts=a)
        cluster_attach = [aws.iam.RolePolicyAttachment(f"{name}-cluster-role-{arn.rsplit('/', 1)[-1]}",
                                                       role=cluster_role.name, policy_arn=arn, opts=a)
                          for arn in iam.CLUSTER_ROLE_POLICIES]
        system_node_role = self._node_role(f"{name}-system-node-role", a)
        karpenter_node_role = self._node_role(f"{name}-karpenter-node-role", a)

        # ---- the cluster
        public_endpoint = bool(site.api_allowed_cidrs)
        cluster = aws.eks.Cluster(
            f"{name}-eks", name=cluster_name, version=site.kubernetes_version, role_arn=cluster_role.arn,
            vpc_config={"subnet_ids": [s.id for s in private_subnets], "security_group_ids": [api_sg.id],
                        "endpoint_private_access": True, "endpoint_public_access": public_endpoint,
                        "public_access_cidrs": list(site.api_allowed_cidrs) if public_endpoint else None},
            encryption_config={"provider": {"key_arn": key.arn}, "resources": ["secrets"]},
            enabled_cluster_log_types=LOG_TYPES,
            # API access entries instead of the aws-auth ConfigMap; the identity running `pulumi up` is admin.
            access_config={"authentication_mode": "API", "bootstrap_cluster_creator_admin_permissions": True},
            upgrade_policy={"support_type": "STANDARD"},   # no silent extended-support charges
            tags=owned,
            opts=pulumi.ResourceOptions(parent=self, provider=self.aws_provider,
                                        depends_on=[log_group, *cluster_attach]))
        self.cluster = cluster
        # Karpenter finds the node security group (EKS's cluster security group) by tag.
        aws.ec2.Tag(f"{name}-cluster-sg-discovery", resource_id=cluster.vpc_config.cluster_security_group_id,
                    key=DISCOVERY_TAG, value=cluster_name, opts=a)

        pod_identity_agent = aws.eks.Addon(f"{name}-addon-pod-identity", cluster_name=cluster.name,
                                           addon_name="eks-pod-identity-agent", resolve_conflicts_on_update="OVERWRITE",
                                           opts=a)
        vpc_cni_role = self._pod_identity_role(f"{name}-vpc-cni-role", iam.VPC_CNI_POLICIES, a)
        # the VPC CNI enforces NetworkPolicies only when asked to (its network policy agent)
        vpc_cni = aws.eks.Addon(f"{name}-addon-vpc-cni", cluster_name=cluster.name, addon_name="vpc-cni",
                                resolve_conflicts_on_update="OVERWRITE",
                                configuration_values=json.dumps({"enableNetworkPolicy": "true"}),
                                pod_identity_associations=[{"role_arn": vpc_cni_role.arn, "service_account": "aws-node"}],
                                opts=pulumi.ResourceOptions(parent=self, provider=self.aws_provider,
                                                            depends_on=[pod_identity_agent]))
        aws.eks.Addon(f"{name}-addon-kube-proxy", cluster_name=cluster.name, addon_name="kube-proxy",
                      resolve_conflicts_on_update="OVERWRITE", opts=a)

        # ---- system node group: the platform (Karpenter, add-ons, operators, gateway proxies, monitoring, data
        # stores) on untainted CPU nodes sized for it; GPU pods keep to Karpenter's tainted GPU pools
        system = args.system_pool or system_pool(site, args.node_pools)
        launch_template = aws.ec2.LaunchTemplate(
            f"{name}-system-lt", description=f"{cluster_name} system nodes",
            metadata_options={"http_endpoint": "enabled", "http_tokens": "required",
                              "http_put_response_hop_limit": 1, "instance_metadata_tags": "disabled"},
            block_device_mappings=[{"device_name": "/dev/xvda",
                                    "ebs": {"volume_size": 50, "volume_type": "gp3", "encrypted": "true",
                                            "delete_on_termination": "true"}}],
            tag_specifications=[{"resource_type": "instance", "tags": {**tags, "Name": f"{cluster_name}-system"}}],
            opts=a)
        system_nodes = aws.eks.NodeGroup(
            f"{name}-system-nodes", cluster_name=cluster.name, node_role_arn=system_node_role.arn,
            subnet_ids=[s.id for s in private_subnets], instance_types=[system.instance_type],
            ami_type="AL2023_x86_64_STANDARD", capacity_type="ON_DEMAND",
            scaling_config={"desired_size": system.nodes, "min_size": system.nodes, "max_size": system.max_nodes},
            update_config={"max_unavailable": 1},
            launch_template={"id": launch_template.id, "version": launch_template.latest_version.apply(str)},
            labels=dict(system.labels),
            opts=pulumi.ResourceOptions(parent=self, provider=self.aws_provider, depends_on=[vpc_cni]))
        aws.eks.Addon(f"{name}-addon-coredns", cluster_name=cluster.name, addon_name="coredns",
                      resolve_conflicts_on_update="OVERWRITE",
                      opts=pulumi.ResourceOptions(parent=self, provider=self.aws_provider, depends_on=[system_nodes]))
        ebs_role = self._pod_identity_role(f"{name}-ebs-csi-role", iam.EBS_CSI_POLICIES, a)
        aws.eks.Addon(f"{name}-addon-ebs-csi", cluster_name=cluster.name, addon_name="aws-ebs-csi-driver",
                      resolve_conflicts_on_update="OVERWRITE",
                      pod_identity_associations=[{"role_arn": ebs_role.arn, "service_account": "ebs-csi-controller-sa"}],
                      opts=pulumi.ResourceOptions(parent=self, provider=self.aws_provider,
                                                  depends_on=[system_nodes, pod_identity_agent]))
        model_cache_fs, model_cache_deps = self._model_cache_filesystem(name, args, cluster.name, vpc.id, private_subnets,
                                                                        key.arn, system_nodes, pod_identity_agent, a)

        # ---- Karpenter: interruption queue, controller role (pod identity), node access entry
        queue = aws.sqs.Queue(f"{name}-interruption-queue", name=f"{cluster_name}-karpenter",
                              message_retention_seconds=300, sqs_managed_sse_enabled=True, opts=a)
        aws.sqs.QueuePolicy(f"{name}-interruption-queue-policy", queue_url=queue.url,
                            policy=queue.arn.apply(_queue_policy), opts=a)
        for rule_name, pattern in _INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(f"{name}-event-{rule_name}", event_pattern=json.dumps(pattern),
                                            description=f"Karpenter interruption handling: {rule_name}", opts=a)
            aws.cloudwatch.EventTarget(f"{name}-event-{rule_name}-target", rule=rule.name, arn=queue.arn, opts=a)

        karpenter_role = aws.iam.Role(f"{name}-karpenter-role", assume_role_policy=iam.pod_identity_trust(), opts=a)
        aws.iam.RolePolicy(
            f"{name}-karpenter-policy", role=karpenter_role.id,
            policy=pulumi.Output.all(cluster.arn, karpenter_node_role.arn, queue.arn).apply(
                lambda v: json.dumps(iam.karpenter_controller_policy(
                    cluster_name=cluster_name, region=site.region, account=iam.account_of(v[0]),
                    partition=iam.partition_of(v[0]), cluster_arn=v[0], node_role_arn=v[1], queue_arn=v[2]))),
            opts=a)
        karpenter_identity = aws.eks.PodIdentityAssociation(
            f"{name}-karpenter-pod-identity", cluster_name=cluster.name, namespace=KARPENTER_NAMESPACE,
            service_account=KARPENTER_SERVICE_ACCOUNT, role_arn=karpenter_role.arn,
            opts=pulumi.ResourceOptions(parent=self, provider=self.aws_provider, depends_on=[pod_identity_agent]))
        karpenter_access = aws.eks.AccessEntry(f"{name}-karpenter-node-access", cluster_name=cluster.name,
                                               principal_arn=karpenter_node_role.arn, type="EC2_LINUX", opts=a)
        identity = pulumi.ResourceOptions(parent=self, provider=self.aws_provider, depends_on=[pod_identity_agent])
        # model servers: per serving namespace, read-only to exactly its pipelines' S3 model prefixes
        for namespace, uris in sorted(args.model_reads.items()):
            role = self._scoped_role(f"{name}-models-{namespace.removeprefix('ml-')}", cluster.arn,
                                     functools.partial(iam.model_reader_policy, uris), a)
            aws.eks.PodIdentityAssociation(f"{name}-models-{namespace}-pod-identity", cluster_name=cluster.name,
                                           namespace=namespace, service_account=MODEL_SERVICE_ACCOUNT, role_arn=role.arn,
                                           opts=identity)
        dns_identity = None
        if args.dns_zone is not None:
            zone = args.dns_zone
            dns_role = self._scoped_role(f"{name}-external-dns", cluster.arn, lambda partition: iam.external_dns_policy(
                domain=zone.domain, zone_id=zone.zone_id, partition=partition), a)
            dns_identity = aws.eks.PodIdentityAssociation(
                f"{name}-external-dns-pod-identity", cluster_name=cluster.name, namespace=dns.NAMESPACE,
                service_account=dns.SERVICE_ACCOUNT, role_arn=dns_role.arn, opts=identity)
        lb_role = self._scoped_role(f"{name}-lb-controller", cluster.arn, lambda partition: iam.load_balancer_controller_policy(
            cluster_name=cluster_name, partition=partition), a)
        lb_identity = aws.eks.PodIdentityAssociation(
            f"{name}-lb-controller-pod-identity", cluster_name=cluster.name, namespace="kube-system",
            service_account=LOAD_BALANCER_SERVICE_ACCOUNT, role_arn=lb_role.arn, opts=identity)

        # ---- Kubernetes side
        self.endpoint = cluster.endpoint
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(cluster.endpoint, cluster.certificate_authority.data)
                                               .apply(lambda v: kubeconfig_for(cluster_name, site.region, v[0], v[1])))
        self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig, enable_server_side_apply=True,
                                     opts=pulumi.ResourceOptions(parent=self, depends_on=[system_nodes]))
        kube = pulumi.ResourceOptions(parent=self, provider=self.provider)

        has_gpus = any(p.gpu_type for p in args.node_pools)
        self.baseline = ClusterBaseline(f"{name}-baseline", ClusterBaselineArgs(
            site=site.name, provider=self.provider,
            namespaces=baseline_namespaces(site.name, site_tiers(site), gpu_operator=has_gpus,
                                           kubernetes_version=site.kubernetes_version),
            quotas=args.quotas), opts=pulumi.ResourceOptions(parent=self))
        # Encrypted gp3 as the default class for the data stores' volumes (Redis AOF, Qdrant).
        storage = k8s.storage.v1.StorageClass(
            f"{name}-gp3", metadata={"name": STORAGE_CLASS,
                                     "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            provisioner="ebs.csi.aws.com", volume_binding_mode="WaitForFirstConsumer", allow_volume_expansion=True,
            reclaim_policy="Delete", parameters={"type": "gp3", "encrypted": "true", "kmsKeyId": key.arn}, opts=kube)
        # The vLLM model cache (clusters/model_access.py): one EFS access point per claim, its directory fixed by the
        # claim's namespace and name (a claim made again finds its weights), every file owned by the serving UID.
        model_cache = k8s.storage.v1.StorageClass(
            f"{name}-model-cache-class", metadata={"name": MODEL_CACHE_CLASS}, provisioner="efs.csi.aws.com",
            parameters={"provisioningMode": "efs-ap", "fileSystemId": model_cache_fs.id, "directoryPerms": "750",
                        "uid": str(MODEL_CACHE_UID), "gid": str(MODEL_CACHE_UID), "basePath": "/model-cache",
                        "subPathPattern": "${.PVC.namespace}/${.PVC.name}", "ensureUniqueDirectory": "false"},
            mount_options=["tls"], reclaim_policy="Delete", volume_binding_mode="Immediate",
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=model_cache_deps))

        karpenter_resources = {"cpu": f"{KARPENTER_CPU:g}", "memory": f"{KARPENTER_MEMORY_GIB:g}Gi"}
        karpenter = k8s.helm.v3.Release(
            f"{name}-karpenter", name="karpenter", chart=KARPENTER_CHART, version=args.karpenter_chart_version,
            namespace=KARPENTER_NAMESPACE,
            values={
                "settings": {"clusterName": cluster_name, "interruptionQueue": queue.name},
                "serviceAccount": {"name": KARPENTER_SERVICE_ACCOUNT},
                "replicas": KARPENTER_REPLICAS,
                "nodeSelector": {SYSTEM_NODE_LABEL: "system"},
                "controller": {"resources": {"requests": dict(karpenter_resources), "limits": dict(karpenter_resources)}},
            },
            atomic=True, timeout=600,
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider,
                                        depends_on=[karpenter_identity, karpenter_access, system_nodes]))
        node_classes, pools = [], []
        for pool in args.node_pools:
            after_karpenter = pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[karpenter])
            node_classes.append(k8s.apiextensions.CustomResource(
                f"{name}-nodeclass-{pool.name}", api_version="karpenter.k8s.aws/v1", kind="EC2NodeClass",
                metadata={"name": pool.name, "labels": {labels.SITE: site.name}},
                spec=ec2_node_class(pool, cluster_name=cluster_name, node_role=karpenter_node_role.name,
                                    tags={**tags, "hybridml.io/node-pool": pool.name}, ami_alias=args.ami_alias),
                opts=after_karpenter))
            pools.append(k8s.apiextensions.CustomResource(
                f"{name}-nodepool-{pool.name}", api_version="karpenter.sh/v1", kind="NodePool",
                metadata={"name": pool.name, "labels": {labels.SITE: site.name}},
                spec=node_pool(pool), opts=pulumi.ResourceOptions(parent=self, provider=self.provider,
                                                                  depends_on=[karpenter, node_classes[-1]])))
        ready: list[pulumi.Resource] = [*self.baseline.ready, storage, model_cache, karpenter, *pools]
        if dns_identity is not None and args.dns_zone is not None:
            ready += self._external_dns(name, cluster_name, site.region, args.dns_zone,
                                        [dns_identity, system_nodes, *self.baseline.ready])
        if has_gpus:
            gpu = NvidiaGpuStack(f"{name}-nvidia", NvidiaGpuStackArgs(
                provider=self.provider, chart_version=args.gpu_operator_chart_version,
                depends_on=[*self.baseline.ready]), opts=pulumi.ResourceOptions(parent=self))
            ready.append(gpu.release)
        # KubeRay for the batch pipelines (workloads/batch_job.py): on every cloud site, pinned (infra/versions.py)
        kuberay = KubeRayOperator(f"{name}-kuberay", KubeRayOperatorArgs(
            provider=self.provider, depends_on=[*self.baseline.ready]), opts=pulumi.ResourceOptions(parent=self))
        ready += kuberay.ready
        # every other controller of the kinds the workloads write, pinned (infra/versions.py), webhooks ready
        operators = PlatformOperators(f"{name}-operators", PlatformOperatorsArgs(
            provider=self.provider, cluster_name=cluster_name, region=site.region, vpc_id=vpc.id,
            storage_class=STORAGE_CLASS, depends_on=[*self.baseline.ready, storage, system_nodes],
            load_balancer_identity=[lb_identity]), opts=pulumi.ResourceOptions(parent=self))
        ready += operators.ready

        gpu_types = sorted(p.gpu_type for p in args.node_pools if p.gpu_type)
        tiers = [t.value for t in site_tiers(site)]
        gate = readiness_gate(name, parent=self, provider=self.provider, depends_on=ready,
                              facts=cluster_facts(site.name, "cloud", False, tiers, gpu_types))
        self.handle = ClusterHandle(site=site.name, kind="cloud", provider=self.provider, simulated=False,
                                    gpu_types=gpu_types, privacy_tiers=tiers, ready=[gate], endpoint=self.endpoint,
                                    kubeconfig=self.kubeconfig, operators=frozenset(operators.releases))
        self.register_outputs({"cluster_name": cluster_name, "endpoint": self.endpoint,
                               "node_pools": [p.name for p in args.node_pools],
                               "system_nodes": {"instance_type": system.instance_type, "nodes": system.nodes}})

    def _node_role(self, role_name: str, opts: pulumi.ResourceOptions) -> aws.iam.Role:
        role = aws.iam.Role(role_name, assume_role_policy=iam.assume_role("ec2.amazonaws.com"), opts=opts)
        for arn in iam.NODE_ROLE_POLICIES:
            aws.iam.RolePolicyAttachment(f"{role_name}-{arn.rsplit('/', 1)[-1]}", role=role.name, policy_arn=arn,
                                         opts=opts)
        return role

    def _scoped_role(self, role_name: str, cluster_arn: pulumi.Output[str], policy: Callable[[str], dict],
                     opts: pulumi.ResourceOptions) -> aws.iam.Role:
        """A Pod Identity role with one inline policy, `policy(partition)` (clusters/iam.py), in the cluster's partition.
        `role_name` (the role's name prefix) keeps within what a 36-character site name leaves of IAM's 64."""
        role = aws.iam.Role(role_name, assume_role_policy=iam.pod_identity_trust(), opts=opts)
        aws.iam.RolePolicy(f"{role_name}-policy", role=role.id,
                           policy=cluster_arn.apply(lambda arn: json.dumps(policy(iam.partition_of(arn)))), opts=opts)
        return role

    def _model_cache_filesystem(self, name: str, args: CloudGpuClusterArgs, eks_name: pulumi.Output[str], vpc_id: pulumi.Output[str],
                                private_subnets: list, key_arn: pulumi.Output[str], system_nodes: pulumi.Resource,
                                pod_identity_agent: pulumi.Resource, opts: pulumi.ResourceOptions):
        """The EFS file system of the model cache (KMS-encrypted, elastic throughput, a mount target per zone, NFS from
        the VPC only) and the EFS CSI driver add-on that makes its access points; returns (file system, what a claim
        on it needs first)."""
        sg = aws.ec2.SecurityGroup(f"{name}-model-cache-sg", vpc_id=vpc_id,
                                   description=f"NFS to the model cache of {args.cluster_name} from the VPC", opts=opts)
        aws.vpc.SecurityGroupIngressRule(f"{name}-model-cache-nfs", security_group_id=sg.id, ip_protocol="tcp",
                                         from_port=2049, to_port=2049, cidr_ipv4=args.site.vpc_cidr,
                                         description="NFS from the cluster's nodes", opts=opts)
        fs = aws.efs.FileSystem(f"{name}-model-cache", encrypted=True, kms_key_id=key_arn, throughput_mode="elastic",
                                performance_mode="generalPurpose", tags={"Name": f"{args.cluster_name}-model-cache"},
                                opts=opts)
        targets = [aws.efs.MountTarget(f"{name}-model-cache-{sn.zone}", file_system_id=fs.id, subnet_id=subnet.id,
                                       security_groups=[sg.id], opts=opts)
                   for sn, subnet in zip(args.subnets, private_subnets, strict=True)]
        efs_role = self._pod_identity_role(f"{name}-efs-csi-role", iam.EFS_CSI_POLICIES, opts)
        addon = aws.eks.Addon(f"{name}-addon-efs-csi", cluster_name=eks_name, addon_name="aws-efs-csi-driver",
                              resolve_conflicts_on_update="OVERWRITE",
                              pod_identity_associations=[{"role_arn": efs_role.arn, "service_account": "efs-csi-controller-sa"}],
                              opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                                  depends_on=[system_nodes, pod_identity_agent])))
        return fs, [*targets, addon]

    def _external_dns(self, name: str, cluster_name: str, region: str, zone: dns.HostedZone,
                      after: list[pulumi.Resource]) -> list[pulumi.Resource]:
        """external-dns (pinned, infra/versions.py) in its own namespace under Pod Security `restricted`: Route53
        records for the hostnames the gateways' and data stores' LoadBalancer Services carry (clusters/dns.py)."""
        kube = pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=after)
        namespace = k8s.core.v1.Namespace(f"{name}-external-dns-ns", metadata={"name": dns.NAMESPACE, "labels": {
            MANAGED_BY: MANAGED_BY_VALUE, PSS_ENFORCE: "restricted", PSS_AUDIT: "restricted", PSS_WARN: "restricted"}},
            opts=kube)
        release = k8s.helm.v3.Release(
            f"{name}-external-dns", name="external-dns", chart=dns.CHART, version=dns.CHART_VERSION,
            repository_opts={"repo": dns.CHART_REPO}, namespace=dns.NAMESPACE,
            values=dns.external_dns_values(owner_id=cluster_name, zone=zone, region=region), atomic=True, timeout=600,
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[namespace, *after]))
        return [namespace, release]

    def _pod_identity_role(self, role_name: str, policies: tuple[str, ...], opts: pulumi.ResourceOptions):
        role = aws.iam.Role(role_name, assume_role_policy=iam.pod_identity_trust(), opts=opts)
        for arn in policies:
            aws.iam.RolePolicyAttachment(f"{role_name}-{arn.rsplit('/', 1)[-1]}", role=role.name, policy_arn=arn,
                                         opts=opts)
        return role


# EventBridge rules Karpenter's interruption handling consumes (upstream getting-started template).
_INTERRUPTION_EVENTS = {
    "scheduled-change": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "instance-state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
}


def _queue_policy(queue_arn: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "EventBridgeWrite", "Effect": "Allow",
         "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
         "Action": "sqs:SendMessage", "Resource": queue_arn},
        {"Sid": "DenyHTTP", "Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": queue_arn,
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]})
