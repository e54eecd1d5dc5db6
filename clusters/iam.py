"""IAM policy documents for the cloud clusters. Pure: dicts in, dicts out, tested for least privilege.

Controllers get credentials through EKS Pod Identity (one role per service account, trusted only
by `pods.eks.amazonaws.com` and scoped by the association to one namespace/service account), not
the node role: a pod can never borrow another controller's permissions, and there is no OIDC
provider to manage. The node roles carry only what kubelet needs.
"""
from __future__ import annotations

import json
from typing import Any

AWS_MANAGED = "arn:aws:iam::aws:policy/"

CLUSTER_ROLE_POLICIES = (AWS_MANAGED + "AmazonEKSClusterPolicy",)
# Nodes pull images and join the cluster; the VPC CNI's permissions go to its own pod identity role.
NODE_ROLE_POLICIES = (
    AWS_MANAGED + "AmazonEKSWorkerNodePolicy",
    AWS_MANAGED + "AmazonEC2ContainerRegistryPullOnly",
    AWS_MANAGED + "AmazonSSMManagedInstanceCore",   # break-glass shell via SSM instead of SSH/public IPs
)
VPC_CNI_POLICIES = (AWS_MANAGED + "AmazonEKS_CNI_Policy",)
EBS_CSI_POLICIES = (AWS_MANAGED + "service-role/AmazonEBSCSIDriverPolicy",)
EFS_CSI_POLICIES = (AWS_MANAGED + "service-role/AmazonEFSCSIDriverPolicy",)   # access points of the model cache


def assume_role(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


def pod_identity_trust() -> str:
    """Trust policy of a role used through EKS Pod Identity (TagSession is required by the agent)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
        "Action": ["sts:AssumeRole", "sts:TagSession"]}]})


def karpenter_controller_policy(*, cluster_name: str, region: str, account: str, partition: str = "aws",
                                node_role_arn: str, queue_arn: str, cluster_arn: str) -> dict[str, Any]:
    """Karpenter's controller permissions, scoped like upstream's reference policy: it may only
    launch/terminate instances tagged for this cluster, pass only the node role, read only its
    interruption queue and describe only its cluster. Read-only EC2 Describe* cannot be scoped by
    resource (an AWS limitation) and is restricted to the region instead."""
    tag = f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}"
    req_tag = f"aws:RequestTag/kubernetes.io/cluster/{cluster_name}"
    ec2 = f"arn:{partition}:ec2:{region}"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "AllowScopedEC2InstanceAccessActions", "Effect": "Allow",
         "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
         "Resource": [f"{ec2}::image/*", f"{ec2}::snapshot/*", f"{ec2}:*:security-group/*", f"{ec2}:*:subnet/*",
                      f"{ec2}:*:capacity-reservation/*"]},
        {"Sid": "AllowScopedEC2LaunchTemplateAccessActions", "Effect": "Allow",
         "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
         "Resource": f"{ec2}:*:launch-template/*",
         "Condition": {"StringEquals": {tag: "owned"}, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}}},
        {"Sid": "AllowScopedEC2InstanceActionsWithTags", "Effect": "Allow",
         "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
         "Resource": [f"{ec2}:*:fleet/*", f"{ec2}:*:instance/*", f"{ec2}:*:volume/*",
                      f"{ec2}:*:network-interface/*", f"{ec2}:*:launch-template/*", f"{ec2}:*:spot-instances-request/*"],
         "Condition": {"StringEquals": {req_tag: "owned", "aws:RequestTag/eks:eks-cluster-name": cluster_name},
                       "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}}},
        {"Sid": "AllowScopedResourceCreationTagging", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": [f"{ec2}:*:fleet/*", f"{ec2}:*:instance/*", f"{ec2}:*:volume/*",
                      f"{ec2}:*:network-interface/*", f"{ec2}:*:launch-template/*", f"{ec2}:*:spot-instances-request/*"],
         "Condition": {"StringEquals": {req_tag: "owned", "aws:RequestTag/eks:eks-cluster-name": cluster_name,
                                        "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]},
                       "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}}},
        {"Sid": "AllowScopedResourceTagging", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": f"{ec2}:*:instance/*",
         "Condition": {"StringEquals": {tag: "owned"}, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                       "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster_name},
                       "ForAllValues:StringEquals": {"aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]}}},
        {"Sid": "AllowScopedDeletion", "Effect": "Allow",
         "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
         "Resource": [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
         "Condition": {"StringEquals": {tag: "owned"}, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}}},
        {"Sid": "AllowRegionalReadActions", "Effect": "Allow",
         "Action": ["ec2:DescribeCapacityReservations", "ec2:DescribeImages", "ec2:DescribeInstances",
                    "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeInstanceTypes", "ec2:DescribeLaunchTemplates",
                    "ec2:DescribeSecurityGroups", "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets"],
         "Resource": "*", "Condition": {"StringEquals": {"aws:RequestedRegion": region}}},
        {"Sid": "AllowSSMReadActions", "Effect": "Allow", "Action": "ssm:GetParameter",
         "Resource": f"arn:{partition}:ssm:{region}::parameter/aws/service/*"},
        {"Sid": "AllowPricingReadActions", "Effect": "Allow", "Action": "pricing:GetProducts", "Resource": "*"},
        {"Sid": "AllowInterruptionQueueActions", "Effect": "Allow",
         "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"], "Resource": queue_arn},
        {"Sid": "AllowPassingInstanceRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": node_role_arn,
         "Condition": {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}}},
        {"Sid": "AllowScopedInstanceProfileCreationActions", "Effect": "Allow",
         "Action": ["iam:CreateInstanceProfile", "iam:TagInstanceProfile"],
         "Resource": f"arn:{partition}:iam::{account}:instance-profile/*",
         "Condition": {"StringEquals": {req_tag: "owned", "aws:RequestTag/eks:eks-cluster-name": cluster_name,
                                        "aws:RequestTag/topology.kubernetes.io/region": region},
                       "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"}}},
        {"Sid": "AllowScopedInstanceProfileActions", "Effect": "Allow",
         "Action": ["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"],
         "Resource": f"arn:{partition}:iam::{account}:instance-profile/*",
         "Condition": {"StringEquals": {tag: "owned", "aws:ResourceTag/topology.kubernetes.io/region": region},
                       "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"}}},
        {"Sid": "AllowInstanceProfileReadActions", "Effect": "Allow", "Action": "iam:GetInstanceProfile",
         "Resource": f"arn:{partition}:iam::{account}:instance-profile/*"},
        {"Sid": "AllowAPIServerEndpointDiscovery", "Effect": "Allow", "Action": "eks:DescribeCluster",
         "Resource": cluster_arn},
    ]}


def external_dns_policy(*, domain: str, zone_id: str | None, partition: str = "aws") -> dict[str, Any]:
    """external-dns on Route53: change records only of the environment's hosted zone (any zone when the stack names
    none, which external-dns then finds by `domain`), and there only names under `domain` and the record types it
    writes (A/AAAA aliases to the load balancers, CNAME, its TXT ownership records); listing zones cannot be scoped
    by resource (an AWS limitation)."""
    zone = f"arn:{partition}:route53:::hostedzone/{zone_id or '*'}"
    name = domain.lower().rstrip(".")
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ChangeRecordsUnderTheEnvironmentsDomain", "Effect": "Allow", "Action": "route53:ChangeResourceRecordSets",
         "Resource": zone,
         "Condition": {"ForAllValues:StringLike": {
             "route53:ChangeResourceRecordSetsNormalizedRecordNames": [name, f"*.{name}"],
             "route53:ChangeResourceRecordSetsRecordTypes": ["A", "AAAA", "CNAME", "TXT"]}}},
        {"Sid": "ReadTheEnvironmentsZone", "Effect": "Allow",
         "Action": ["route53:ListResourceRecordSets", "route53:ListTagsForResources"], "Resource": zone},
        {"Sid": "ListZones", "Effect": "Allow", "Action": ["route53:ListHostedZones", "route53:ListHostedZonesByName"],
         "Resource": "*"},
    ]}


def load_balancer_controller_policy(*, cluster_name: str, partition: str = "aws") -> dict[str, Any]:
    """The AWS Load Balancer Controller, for the network load balancers of the program's LoadBalancer Services: upstream's
    reference policy less what only ALBs use (WAF, Shield, Cognito, ACM, listener certificates), with every create,
    change and delete bound to resources tagged `elbv2.k8s.aws/cluster: <cluster>` (the controller tags what it makes),
    so it can never touch another cluster's load balancers or security groups. Describe* and security-group rule
    changes cannot be scoped by resource tag (rules go on the node security group, which it does not own)."""
    tag, req = "aws:ResourceTag/elbv2.k8s.aws/cluster", "aws:RequestTag/elbv2.k8s.aws/cluster"
    elb, ec2 = f"arn:{partition}:elasticloadbalancing:*:*", f"arn:{partition}:ec2:*:*"
    mine = {"StringEquals": {tag: cluster_name}}
    tagged_on_create = {"StringEquals": {req: cluster_name}}
    load_balancers = [f"{elb}:targetgroup/*/*", f"{elb}:loadbalancer/net/*/*"]
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ServiceLinkedRole", "Effect": "Allow", "Action": "iam:CreateServiceLinkedRole", "Resource": "*",
         "Condition": {"StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}}},
        {"Sid": "Describe", "Effect": "Allow", "Resource": "*", "Action": [
            "ec2:DescribeAccountAttributes", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones",
            "ec2:DescribeInternetGateways", "ec2:DescribeVpcs", "ec2:DescribeVpcPeeringConnections", "ec2:DescribeSubnets",
            "ec2:DescribeSecurityGroups", "ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces", "ec2:DescribeTags",
            "ec2:DescribeRouteTables", "ec2:GetSecurityGroupsForVpc", "ec2:DescribeIpamPools", "ec2:GetCoipPoolUsage",
            "ec2:DescribeCoipPools",
            "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeLoadBalancerAttributes",
            "elasticloadbalancing:DescribeListeners", "elasticloadbalancing:DescribeListenerAttributes",
            "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetGroupAttributes",
            "elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DescribeTags",
            "elasticloadbalancing:DescribeCapacityReservation", "elasticloadbalancing:DescribeSSLPolicies"]},
        {"Sid": "NodeSecurityGroupRules", "Effect": "Allow", "Resource": "*",
         "Action": ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"]},
        {"Sid": "CreateSecurityGroups", "Effect": "Allow", "Action": "ec2:CreateSecurityGroup", "Resource": "*"},
        {"Sid": "TagSecurityGroupsOnCreate", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": f"{ec2}:security-group/*",
         "Condition": {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup", req: cluster_name}}},
        {"Sid": "OwnSecurityGroups", "Effect": "Allow", "Resource": f"{ec2}:security-group/*", "Condition": mine,
         "Action": ["ec2:CreateTags", "ec2:DeleteTags", "ec2:DeleteSecurityGroup"]},
        {"Sid": "CreateLoadBalancersTagged", "Effect": "Allow", "Resource": "*", "Condition": tagged_on_create,
         "Action": ["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"]},
        {"Sid": "TagOnCreate", "Effect": "Allow", "Action": "elasticloadbalancing:AddTags", "Resource": load_balancers,
         "Condition": {"StringEquals": {req: cluster_name, "elasticloadbalancing:CreateAction": [
             "CreateTargetGroup", "CreateLoadBalancer"]}}},
        {"Sid": "OwnLoadBalancers", "Effect": "Allow", "Resource": load_balancers, "Condition": mine, "Action": [
            "elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags",
            "elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:SetIpAddressType",
            "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:SetSubnets",
            "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:ModifyTargetGroup",
            "elasticloadbalancing:ModifyTargetGroupAttributes", "elasticloadbalancing:DeleteTargetGroup",
            "elasticloadbalancing:ModifyCapacityReservation", "elasticloadbalancing:ModifyIpPools"]},
        {"Sid": "OwnTargets", "Effect": "Allow", "Resource": f"{elb}:targetgroup/*/*", "Condition": mine,
         "Action": ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"]},
        {"Sid": "OwnListeners", "Effect": "Allow", "Resource": f"{elb}:loadbalancer/net/*/*", "Condition": mine,
         "Action": ["elasticloadbalancing:CreateListener"]},
        {"Sid": "TagOwnListeners", "Effect": "Allow", "Resource": f"{elb}:listener/net/*/*/*", "Condition": mine,
         "Action": ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"]},
        # as upstream's: a listener's changes cannot be conditioned on its load balancer's tags
        {"Sid": "ListenersOfNetworkLoadBalancers", "Effect": "Allow", "Resource": f"{elb}:listener/net/*/*/*",
         "Action": ["elasticloadbalancing:DeleteListener", "elasticloadbalancing:ModifyListener",
                    "elasticloadbalancing:ModifyListenerAttributes"]},
    ]}


def s3_location(uri: str) -> tuple[str, str]:
    """(bucket, key prefix without slashes at its ends) of an `s3://bucket/prefix` URI."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, prefix.strip("/")


def model_reader_policy(uris: list[str] | tuple[str, ...], partition: str = "aws") -> dict[str, Any]:
    """Read access to exactly the model artifacts of `uris` (s3://bucket/prefix): GetObject under each prefix,
    ListBucket of each bucket only within those prefixes. Nothing else of any bucket, no write."""
    if not uris:
        raise ValueError("a model reader policy needs at least one s3:// URI")
    by_bucket: dict[str, set[str]] = {}
    for uri in uris:
        bucket, prefix = s3_location(uri)
        by_bucket.setdefault(bucket, set()).add(prefix)
    statements: list[dict[str, Any]] = []
    for i, (bucket, prefixes) in enumerate(sorted(by_bucket.items())):
        arn = f"arn:{partition}:s3:::{bucket}"
        whole = "" in prefixes
        objects = [f"{arn}/*"] if whole else sorted(r for p in prefixes for r in (f"{arn}/{p}", f"{arn}/{p}/*"))
        statements.append({"Sid": f"ReadModels{i}", "Effect": "Allow", "Action": "s3:GetObject", "Resource": objects})
        listing: dict[str, Any] = {"Sid": f"ListModels{i}", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": arn}
        if not whole:
            listing["Condition"] = {"StringLike": {"s3:prefix": sorted(r for p in prefixes for r in (p, f"{p}/*"))}}
        statements.append(listing)
    return {"Version": "2012-10-17", "Statement": statements}


def account_of(arn: str) -> str:
    """The account id field of an ARN (arn:partition:service:region:ACCOUNT:resource)."""
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 else ""


def partition_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[1] if len(parts) > 5 else "aws"
