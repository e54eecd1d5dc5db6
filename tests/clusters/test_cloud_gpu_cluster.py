"""CloudGpuCluster as the program builds it (dev spec, and the tiny spec with a public-CIDR endpoint)."""
from __future__ import annotations

import copy
import json
from collections import Counter

import pytest

from clusters import sizing
from infra.loader import load_environment
from tests.conftest import SMALL_SPEC
from tests.pulumi_mocks import cluster_counts, of_type, preview, where, write_spec

SITE = "aws-use1"
WORLD = {"0.0.0.0/0", "::/0"}


@pytest.fixture(scope="module")
def dev():
    return preview("dev")


def test_resource_types_and_counts_per_cluster(dev):
    env = load_environment("dev")
    site = env.site(SITE)
    counts = cluster_counts(dev, SITE)
    zones = len(site.zones)
    pools = sizing.node_pools(env, site, dev_plan_site(dev), sizing.batch_nodes_at(dev_plan(), SITE))
    expected = {
        "hybridml:clusters:CloudGpuCluster": 1, "pulumi:providers:aws": 1, "pulumi:providers:kubernetes": 1,
        "aws:ec2/vpc:Vpc": 1, "aws:ec2/subnet:Subnet": 2 * zones, "aws:ec2/natGateway:NatGateway": zones,
        "aws:ec2/eip:Eip": zones, "aws:ec2/routeTable:RouteTable": zones + 1,
        "aws:ec2/routeTableAssociation:RouteTableAssociation": 2 * zones,
        "aws:eks/cluster:Cluster": 1, "aws:kms/key:Key": 1, "aws:eks/nodeGroup:NodeGroup": 1,
        "aws:eks/addon:Addon": 6, "aws:iam/role:Role": 10,   # + EFS CSI, external-dns, LB controller, ml-internal's models
        "aws:efs/fileSystem:FileSystem": 1, "aws:efs/mountTarget:MountTarget": zones,   # the model cache
        "aws:eks/podIdentityAssociation:PodIdentityAssociation": 4,   # Karpenter, external-dns, LB controller, models
        # Karpenter, GPU operator, KubeRay, external-dns + clusters/operators.py: cert-manager, KEDA, KServe (CRDs,
        # controller), LWS, kube-prometheus-stack, Flink operator, AWS Load Balancer Controller
        "kubernetes:helm.sh/v3:Release": 12,
        "kubernetes:yaml/v2:ConfigFile": 1,   # the Feast operator's release manifest
        "kubernetes:karpenter.sh/v1:NodePool": len(pools),
        "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass": len(pools),
        "kubernetes:core/v1:Namespace": 2 + 2 + 1 + 1 + 1 + 5,   # public+internal tiers, gateway, monitoring, gpu-operator,
        # kuberay, external-dns, cert-manager, keda, kserve, lws-system, flink-operator
        "kubernetes:scheduling.k8s.io/v1:PriorityClass": 5,
    }
    for typ, n in expected.items():
        assert counts[typ] == n, (typ, counts[typ], n)
    # the CPU pool only for the batch stage's nodes (a Ray head on a new m7i.8xlarge): the online plan buys none
    assert {p.name for p in pools} == {"gpu-a100", "gpu-h100", "gpu-l4", "cpu"}


def dev_plan():
    from policies.placement import solve

    return solve(load_environment("dev"))


def dev_plan_site(result):
    return dev_plan().site(SITE)


def test_eks_private_endpoint_kms_logs_version(dev):
    (eks,) = of_type(dev, "aws:eks/cluster:Cluster", SITE)
    p = eks.props
    vpc = p["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True and vpc["endpointPublicAccess"] is False, where(eks)
    assert "publicAccessCidrs" not in vpc or not vpc["publicAccessCidrs"]
    enc = p["encryptionConfig"]
    assert enc["resources"] == ["secrets"] and enc["provider"]["keyArn"].startswith("arn:aws:kms:"), where(eks)
    assert set(p["enabledClusterLogTypes"]) == {"api", "audit", "authenticator", "controllerManager", "scheduler"}
    assert p["version"] == "1.33"
    assert p["accessConfig"]["authenticationMode"] == "API"
    (key,) = of_type(dev, "aws:kms/key:Key", SITE)
    assert key.props["enableKeyRotation"] is True


def test_public_endpoint_only_to_the_specs_cidrs(tmp_path):
    spec = copy.deepcopy(SMALL_SPEC)
    spec["sites"][0]["api_allowed_cidrs"] = ["203.0.113.0/24"]
    result = preview(write_spec(tmp_path, spec, "cidrs.yaml"), sites=(SITE,))
    (eks,) = of_type(result, "aws:eks/cluster:Cluster")
    vpc = eks.props["vpcConfig"]
    assert vpc["endpointPublicAccess"] is True and vpc["publicAccessCidrs"] == ["203.0.113.0/24"]
    assert vpc["endpointPrivateAccess"] is True


def test_imdsv2_hop_limit_1_and_encrypted_volumes(dev):
    (lt,) = of_type(dev, "aws:ec2/launchTemplate:LaunchTemplate", SITE)
    meta = lt.props["metadataOptions"]
    assert meta["httpTokens"] == "required" and meta["httpPutResponseHopLimit"] == 1, where(lt)
    assert all(b["ebs"]["encrypted"] in (True, "true") for b in lt.props["blockDeviceMappings"])
    for nc in of_type(dev, "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass", SITE):
        spec = nc.props["spec"]
        assert spec["metadataOptions"]["httpTokens"] == "required", where(nc)
        assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1, where(nc)
        assert all(b["ebs"]["encrypted"] is True for b in spec["blockDeviceMappings"]), where(nc)
        assert spec["associatePublicIPAddress"] is False
        assert spec["role"] == f"{SITE}-karpenter-node-role"   # the node role, resolved from its output


def test_no_public_ips_and_no_world_ingress(dev):
    for sn in of_type(dev, "aws:ec2/subnet:Subnet"):
        assert not sn.props.get("mapPublicIpOnLaunch"), where(sn)
    assert not [r for r in of_type(dev, "aws:ec2/instance:Instance")]
    for lt in of_type(dev, "aws:ec2/launchTemplate:LaunchTemplate"):
        assert not any(ni.get("associatePublicIpAddress") for ni in lt.props.get("networkInterfaces") or [])
    for sg in of_type(dev, "aws:ec2/securityGroup:SecurityGroup") + of_type(dev, "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"):
        for rule in sg.props.get("ingress") or []:
            assert not WORLD & set(rule.get("cidrBlocks") or []), where(sg)
    for rule in of_type(dev, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        assert rule.props.get("cidrIpv4") not in WORLD and rule.props.get("cidrIpv6") not in WORLD, where(rule)
        assert rule.props["cidrIpv4"] == load_environment("dev").site(SITE).vpc_cidr   # the site's own VPC only
    (default_sg,) = of_type(dev, "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", SITE)
    assert not default_sg.props.get("ingress") and not default_sg.props.get("egress")
    # nodes: only private subnets, by discovery tag
    private = [s for s in of_type(dev, "aws:ec2/subnet:Subnet", SITE) if s.props["tags"]["hybridml.io/subnet-role"] == "private"]
    assert all(s.props["tags"]["karpenter.sh/discovery"] == "dev-aws-use1" for s in private)
    (ng,) = of_type(dev, "aws:eks/nodeGroup:NodeGroup", SITE)
    assert sorted(ng.props["subnetIds"]) == sorted(s.id for s in private)


def test_the_policy_rules_pass_on_every_aws_resource(dev):
    """The mandatory AWS rules of policies/rules (run by CrossGuard at `pulumi preview`) hold offline too."""
    rules = pytest.importorskip("policies.rules.aws")
    from policies.rules.base import ResourceView

    failures = []
    for r in dev.resources:
        view = ResourceView(type=r.type, name=r.name, props=r.props, cluster=dev.cluster_of(r), urn=r.urn)
        for rule in rules.RULES:
            for msg in rule.check(view, None):
                failures.append(f"{rule.name}: {r.urn}: {msg}")
    assert not failures, "\n".join(failures)


def test_least_privilege_iam(dev):
    (policy,) = [r for r in of_type(dev, "aws:iam/rolePolicy:RolePolicy", SITE) if "karpenter" in r.name]
    doc = json.loads(policy.props["policy"])
    for st in doc["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert all(a != "*" and not a.endswith(":*") for a in actions), st
        if "iam:PassRole" in actions:
            assert st["Resource"].endswith(f"role/{SITE}-karpenter-node-role")
        if st["Resource"] == "*":
            assert all(":Describe" in a or ":Get" in a for a in actions), st
    kube_system = {r.props["serviceAccount"] for r in of_type(dev, "aws:eks/podIdentityAssociation:PodIdentityAssociation", SITE)
                   if r.props["namespace"] == "kube-system"}
    # external-dns's and the model readers': test_dns_and_models.py; the LB controller's: test_operators.py
    assert kube_system == {"karpenter", "aws-load-balancer-controller"}
    attached = Counter(r.props["policyArn"].rsplit("/", 1)[-1] for r in
                       of_type(dev, "aws:iam/rolePolicyAttachment:RolePolicyAttachment", SITE))
    assert "AdministratorAccess" not in attached and "AmazonEKS_CNI_Policy" in attached


def test_karpenter_and_gpu_operator_releases_are_pinned(dev):
    releases = {r.props["name"]: r.props for r in of_type(dev, "kubernetes:helm.sh/v3:Release", SITE)}
    assert releases["karpenter"]["version"] == "1.8.1"
    assert releases["karpenter"]["values"]["settings"]["clusterName"] == "dev-aws-use1"
    assert releases["gpu-operator"]["version"].startswith("v")
    assert releases["gpu-operator"]["namespace"] == "gpu-operator"


def test_namespaces_enforce_restricted_except_the_documented_gpu_exemption(dev):
    for ns in of_type(dev, "kubernetes:core/v1:Namespace", SITE) + of_type(dev, "kubernetes:core/v1:Namespace", "dc-ashburn"):
        meta = ns.props["metadata"]
        level = meta["labels"]["pod-security.kubernetes.io/enforce"]
        if meta["name"] == "gpu-operator":
            assert level == "privileged" and "hybridml.io/pss-exemption" in meta["annotations"], where(ns)
        else:
            assert level == "restricted", where(ns)
