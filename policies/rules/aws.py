"""AWS: private EKS endpoints, encrypted secrets and volumes, full control-plane logs, IMDSv2, no open ingress."""
from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any

from policies.rules.base import Check, Context, Enforcement, ResourceView, Rule, Severity

ALL_LOG_TYPES = {"api", "audit", "authenticator", "controllerManager", "scheduler"}
MIN_SUPPORTED_MINOR = 31  # EKS standard support, late 2026: 1.31 and newer
WORLD = {"0.0.0.0/0", "::/0"}
SECRET_PATTERNS = [re.compile(p, re.I) for p in (
    r"AKIA[0-9A-Z]{16}", r"-----BEGIN [A-Z ]*PRIVATE KEY-----", r"(password|passwd|secret|token)\s*[=:]\s*\S{6,}",
    r"aws_secret_access_key")]


def _get(d: Any, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return default
        d = d.get(k)
    return default if d is None else d


def eks_endpoint(r: ResourceView, ctx: Context) -> Iterable[str]:
    if r.type != "aws:eks/cluster:Cluster":
        return
    vpc = r.props.get("vpcConfig") or {}
    if vpc.get("endpointPublicAccess", True):
        cidrs = vpc.get("publicAccessCidrs") or ["0.0.0.0/0"]
        if WORLD & set(cidrs):
            yield "EKS API endpoint is public to 0.0.0.0/0"


def eks_secrets_kms(r: ResourceView, ctx: Context) -> Iterable[str]:
    if r.type != "aws:eks/cluster:Cluster":
        return
    enc = r.props.get("encryptionConfig") or {}
    if isinstance(enc, list):
        enc = enc[0] if enc else {}
    if "secrets" not in (enc.get("resources") or []) or not _get(enc, "provider", "keyArn"):
        yield "Kubernetes secrets are not envelope-encrypted with a KMS key"


def eks_logs(r: ResourceView, ctx: Context) -> Iterable[str]:
    if r.type != "aws:eks/cluster:Cluster":
        return
    missing = ALL_LOG_TYPES - set(r.props.get("enabledClusterLogTypes") or [])
    if missing:
        yield f"control-plane log types not enabled: {', '.join(sorted(missing))}"


def eks_version(r: ResourceView, ctx: Context) -> Iterable[str]:
    if r.type != "aws:eks/cluster:Cluster":
        return
    version = str(r.props.get("version") or "")
    m = re.match(r"^1\.(\d+)$", version)
    if not m:
        yield f"Kubernetes version {version or '(unset)'} is not pinned to a supported 1.x minor"
    elif int(m.group(1)) < MIN_SUPPORTED_MINOR:
        yield f"Kubernetes {version} is past EKS standard support (>= 1.{MIN_SUPPORTED_MINOR})"


def imdsv2(r: ResourceView, ctx: Context) -> Iterable[str]:
    if r.type in ("aws:ec2/launchTemplate:LaunchTemplate", "aws:ec2/instance:Instance"):
        meta = r.props.get("metadataOptions") or {}
        if meta.get("httpTokens") != "required":
            yield "IMDSv2 not required (metadataOptions.httpTokens must be 'required')"
        if meta.get("httpPutResponseHopLimit", 2) != 1:
            yield f"IMDS hop limit is {meta.get('httpPutResponseHopLimit', 'default')}, must be 1"
    elif r.type == "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass":
        meta = _get(r.props, "spec", "metadataOptions", default={})
        if meta.get("httpTokens") != "required" or meta.get("httpPutResponseHopLimit") != 1:
            yield "EC2NodeClass must set metadataOptions httpTokens: required and httpPutResponseHopLimit: 1"


def encrypted_volumes(r: ResourceView, ctx: Context) -> Iterable[str]:
    if r.type == "aws:ec2/launchTemplate:LaunchTemplate":
        for bdm in r.props.get("blockDeviceMappings") or []:
            if _get(bdm, "ebs", "encrypted") not in (True, "true"):
                yield f"block device {bdm.get('deviceName')} is not encrypted"
    elif r.type == "aws:ec2/instance:Instance":
        if not _get(r.props, "rootBlockDevice", "encrypted"):
            yield "root block device is not encrypted"
    elif r.type == "aws:ebs/volume:Volume":
        if not r.props.get("encrypted"):
            yield "EBS volume is not encrypted"
    elif r.type == "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass":
        for bdm in _get(r.props, "spec", "blockDeviceMappings", default=[]):
            if not _get(bdm, "ebs", "encrypted"):
                yield f"EC2NodeClass block device {bdm.get('deviceName')} is not encrypted"


def no_public_ips(r: ResourceView, ctx: Context) -> Iterable[str]:
    if r.type == "aws:ec2/launchTemplate:LaunchTemplate":
        for ni in r.props.get("networkInterfaces") or []:
            if ni.get("associatePublicIpAddress") in (True, "true"):
                yield "launch template assigns public IPs"
    elif r.type == "aws:ec2/instance:Instance" and r.props.get("associatePublicIpAddress"):
        yield "instance has a public IP"
    elif r.type == "aws:ec2/subnet:Subnet" and r.props.get("mapPublicIpOnLaunch"):
        tags = r.props.get("tags") or {}
        if tags.get("hybridml.io/subnet-role") != "public-nat":
            yield "subnet maps public IPs on launch"


def no_world_ingress(r: ResourceView, ctx: Context) -> Iterable[str]:
    if r.type == "aws:ec2/securityGroup:SecurityGroup":
        for rule in r.props.get("ingress") or []:
            if WORLD & set((rule.get("cidrBlocks") or []) + (rule.get("ipv6CidrBlocks") or [])):
                yield f"ingress {rule.get('fromPort')}-{rule.get('toPort')} open to the world"
    elif r.type == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
        if r.props.get("cidrIpv4") in WORLD or r.props.get("cidrIpv6") in WORLD:
            yield "ingress rule open to the world"
    elif r.type == "aws:ec2/securityGroupRule:SecurityGroupRule" and r.props.get("type") == "ingress":
        if WORLD & set((r.props.get("cidrBlocks") or []) + (r.props.get("ipv6CidrBlocks") or [])):
            yield "ingress rule open to the world"


def no_secrets_in_user_data(r: ResourceView, ctx: Context) -> Iterable[str]:
    if r.type not in ("aws:ec2/launchTemplate:LaunchTemplate", "aws:ec2/instance:Instance") and \
            r.type != "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass":
        return
    data = r.props.get("userData") or _get(r.props, "spec", "userData", default="") or ""
    text = str(data)
    try:
        text += "\n" + base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except ValueError:  # not base64 (binascii.Error is a ValueError) or not text: plain user data
        pass
    for pattern in SECRET_PATTERNS:
        if pattern.search(text):
            yield f"user data looks like it contains a secret ({pattern.pattern[:30]})"
            return


def _aws(name: str, description: str, check: Check, fix: str, severity: Severity = Severity.high) -> Rule:
    return Rule(name, description, severity, Enforcement.mandatory, fix, check=check, group="aws")


RULES = [
    _aws("aws-eks-private-endpoint", "EKS API endpoint not public to 0.0.0.0/0.", eks_endpoint,
         "set vpcConfig.endpointPublicAccess false, or publicAccessCidrs to your office/VPN ranges", Severity.critical),
    _aws("aws-eks-secrets-encryption", "EKS secrets envelope-encrypted with KMS.", eks_secrets_kms,
         "set encryptionConfig {resources: [secrets], provider.keyArn: <KMS key>}"),
    _aws("aws-eks-control-plane-logs", "All EKS control-plane log types enabled.", eks_logs,
         "set enabledClusterLogTypes to api, audit, authenticator, controllerManager, scheduler", Severity.medium),
    _aws("aws-eks-supported-version", "EKS on a supported Kubernetes version.", eks_version,
         f"set the site's kubernetes_version to 1.{MIN_SUPPORTED_MINOR} or newer", Severity.medium),
    _aws("aws-imdsv2", "Instances require IMDSv2 with hop limit 1.", imdsv2,
         "metadataOptions: httpTokens required, httpPutResponseHopLimit 1"),
    _aws("aws-encrypted-volumes", "All EBS volumes encrypted.", encrypted_volumes, "set ebs.encrypted true"),
    _aws("aws-no-public-ips", "No public IPs on nodes or subnets.", no_public_ips,
         "disable associatePublicIpAddress / mapPublicIpOnLaunch; egress through NAT"),
    _aws("aws-no-world-ingress", "Security groups without 0.0.0.0/0 ingress.", no_world_ingress,
         "restrict ingress to the VPC CIDR or named security groups", Severity.critical),
    _aws("aws-no-secrets-in-user-data", "No secrets in instance user data.", no_secrets_in_user_data,
         "fetch secrets at boot from Secrets Manager / SSM instead", Severity.critical),
]
