"""Every rule: metadata, one passing and at least one failing fixture."""
from __future__ import annotations

import base64

import pytest

from policies.placement.plan import Explanation, PipelinePlacement, PlacementPlan
from policies.rules import ALL_RULES, RULES_BY_NAME, Enforcement, ResourceView, Severity, evaluate
from policies.rules.secrets import config_plaintext
from tests.policies.fixtures import c0, ctx, deployment, edit, eks, launch_template, netpol, pod


def _referent(kind: str, api: str, name: str, namespace: str | None = "ml-internal") -> ResourceView:
    meta = {"name": name} | ({"namespace": namespace} if namespace else {})
    return ResourceView(f"kubernetes:{api}:{kind}", name, {"metadata": meta}, cluster="gpu")


# What the compliant Deployment names exists beside it (referents-exist).
GOOD = [deployment(), netpol(), eks(), launch_template(), _referent("Namespace", "core/v1", "ml-internal", None),
        _referent("Secret", "core/v1", "hf"), _referent("PersistentVolumeClaim", "core/v1", "c")]


def findings(rule, resources, context=None):
    return [f for f in evaluate([RULES_BY_NAME[rule]], resources, context or ctx())]


def test_metadata_of_every_rule():
    names = [r.name for r in ALL_RULES]
    assert len(names) == len(set(names))
    for r in ALL_RULES:
        assert r.name == r.name.lower() and " " not in r.name
        assert r.description.endswith(".") and len(r.description) > 15
        assert isinstance(r.severity, Severity) and isinstance(r.enforcement, Enforcement)
        assert r.fix, r.name
        assert (r.check is None) != (r.stack_check is None)
    mandatory_groups = {r.group for r in ALL_RULES if r.enforcement is Enforcement.mandatory}
    assert {"pod-security", "placement", "aws", "secrets"} <= mandatory_groups
    # security and privacy rules are mandatory
    for r in ALL_RULES:
        if r.group in ("pod-security", "placement", "aws", "secrets"):
            assert r.enforcement is Enforcement.mandatory, r.name


@pytest.mark.parametrize("rule", [r.name for r in ALL_RULES])
def test_compliant_fixtures_pass(rule):
    assert findings(rule, GOOD) == []


def _set(path, value):
    def fn(props):
        node = props
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return fn


T = ["spec", "template", "spec"]
C = T + ["containers", 0]
BAD = [
    ("referents-exist", lambda p: pod(p).update(serviceAccountName="ghost"), "ServiceAccount ml-internal/ghost"),
    ("pss-host-namespaces", lambda p: pod(p).update(hostNetwork=True), "hostNetwork"),
    ("pss-host-namespaces", lambda p: pod(p).update(hostPID=True), "hostPID"),
    ("pss-privileged", lambda p: c0(p)["securityContext"].update(privileged=True), "privileged"),
    ("pss-capabilities", lambda p: c0(p)["securityContext"].update(capabilities={"drop": ["NET_RAW"]}), "drop ALL"),
    ("pss-capabilities", lambda p: c0(p)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "SYS_ADMIN"),
    ("pss-volume-types", lambda p: pod(p)["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
    ("pss-host-ports", lambda p: c0(p).update(ports=[{"containerPort": 80, "hostPort": 80}]), "hostPort 80"),
    ("pss-apparmor-selinux-procmount", lambda p: c0(p)["securityContext"].update(procMount="Unmasked"), "procMount"),
    ("pss-apparmor-selinux-procmount", lambda p: pod(p)["securityContext"].update(seLinuxOptions={"type": "spc_t"}), "spc_t"),
    ("pss-sysctls", lambda p: pod(p)["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "kernel.msgmax"),
    ("pss-capabilities", lambda p: c0(p)["securityContext"].update(capabilities={"drop": ["all"]}), "drop ALL"),
    ("pss-probe-host", lambda p: c0(p)["readinessProbe"]["httpGet"].update(host="10.0.0.1"), "host is '10.0.0.1'"),
    ("pss-privilege-escalation", lambda p: c0(p)["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
    ("pss-run-as-non-root", lambda p: (pod(p)["securityContext"].pop("runAsNonRoot"), c0(p)["securityContext"].pop("runAsNonRoot")), "root"),
    ("pss-run-as-user", lambda p: pod(p)["securityContext"].update(runAsUser=0), "UID 0"),
    ("pss-seccomp", lambda p: pod(p)["securityContext"].pop("seccompProfile"), "seccompProfile"),
    ("pss-seccomp", lambda p: pod(p)["securityContext"].update(seccompProfile={"type": "Unconfined"}), "Unconfined"),
    ("k8s-requests-limits", lambda p: c0(p)["resources"].pop("limits"), "no limits"),
    ("k8s-probes", lambda p: c0(p).pop("livenessProbe"), "livenessProbe"),
    ("k8s-pinned-images", lambda p: c0(p).update(image="vllm/vllm-openai"), "no tag"),
    ("k8s-pinned-images", lambda p: c0(p).update(image="vllm/vllm-openai:latest"), "latest"),
    ("k8s-read-only-root-filesystem", lambda p: c0(p)["securityContext"].pop("readOnlyRootFilesystem"), "writable"),
    ("k8s-recommended-labels", lambda p: p["metadata"]["labels"].pop("app.kubernetes.io/part-of"), "part-of"),
    ("gpu-pod-scheduling", lambda p: pod(p).pop("tolerations"), "toleration"),
    ("gpu-pod-scheduling", lambda p: pod(p).pop("nodeSelector"), "without selecting"),
    ("gpu-pod-scheduling", lambda p: c0(p)["resources"]["limits"].update({"nvidia.com/gpu": "2"}), "differ"),
    ("gpu-type-on-cluster", lambda p: pod(p)["nodeSelector"].update({"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}), "offers"),
    ("secrets-not-in-env", lambda p: c0(p)["env"].append({"name": "DB_PASSWORD", "value": "hunter22"}), "DB_PASSWORD"),
    ("privacy-tier-on-allowed-cluster", lambda p: p["metadata"]["labels"].update({"hybridml.io/privacy-tier": "pii"}), "pii object on cloud"),
]


@pytest.mark.parametrize("rule,change,expect", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_broken_deployment_is_caught(rule, change, expect):
    bad = edit(deployment(), change)
    got = findings(rule, [bad, netpol()])
    assert got, f"{rule} missed the violation"
    assert any(expect in f.message for f in got), [f.message for f in got]
    f = got[0]
    assert f.rule == rule and f.fix and f.resource == "Deployment ml-internal/chat" and f.cluster == "gpu"


def test_gpu_on_cluster_without_gpus():
    got = findings("gpu-type-on-cluster", [deployment(cluster="dc"), netpol(cluster="dc")])
    assert got and "has none" in got[0].message


def test_pii_on_allowed_datacenter_passes():
    r = edit(deployment(cluster="dc", namespace="ml-pii"), lambda p: p["metadata"]["labels"].update(
        {"hybridml.io/privacy-tier": "pii"}))
    assert findings("privacy-tier-on-allowed-cluster", [r]) == []


def test_pss_exemption_only_in_exempt_namespace():
    def broken(p):
        return (pod(p).update(hostNetwork=True), p["metadata"]["labels"].update(
            {"hybridml.io/pss-exemption": "gpu driver needs host network"}))
    in_app_ns = edit(deployment(), broken)
    assert findings("pss-host-namespaces", [in_app_ns])
    exempt = edit(deployment(namespace="gpu-operator"), broken)
    assert findings("pss-host-namespaces", [exempt]) == []


def test_network_policy_missing():
    got = findings("k8s-network-policy-per-namespace", [deployment()])
    assert got and "ml-internal" in got[0].message
    # a policy that selects only some pods is not default-deny
    partial = edit(netpol(), lambda p: p["spec"].update(podSelector={"matchLabels": {"a": "b"}}))
    assert findings("k8s-network-policy-per-namespace", [deployment(), partial])


def test_public_load_balancer():
    def svc(ns, ann=None):
        return ResourceView("kubernetes:core/v1:Service", "s", {
            "metadata": {"name": "s", "namespace": ns, "annotations": ann or {}}, "spec": {"type": "LoadBalancer"}})
    assert findings("k8s-no-public-load-balancer", [svc("ml-internal")])
    assert findings("k8s-no-public-load-balancer", [svc("hybridml-gateway")]) == []
    internal = svc("ml-internal", {"service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"})
    assert findings("k8s-no-public-load-balancer", [internal]) == []


def test_configmap_secret():
    cm = ResourceView("kubernetes:core/v1:ConfigMap", "c", {"metadata": {"name": "c"}, "data": {"api_key": "abc"}})
    assert findings("secrets-not-in-configmaps", [cm])
    ok = ResourceView("kubernetes:core/v1:ConfigMap", "c", {"metadata": {"name": "c"}, "data": {"API_KEY_FILE": "/x"}})
    assert findings("secrets-not-in-configmaps", [ok]) == []


def test_config_plaintext_secrets():
    assert config_plaintext({"hybridml:spec": "x", "hybridml:redisPassword": "p", "aws:region": "us-east-1",
                             "hybridml:apiToken": {"secure": "v1:abc"}}) == ["hybridml:redisPassword"]


AWS_BAD = [
    ("aws-eks-private-endpoint", eks(vpcConfig={"endpointPublicAccess": True}), "0.0.0.0/0"),
    ("aws-eks-private-endpoint", eks(vpcConfig={"endpointPublicAccess": True, "publicAccessCidrs": ["0.0.0.0/0"]}), "public"),
    ("aws-eks-secrets-encryption", eks(encryptionConfig=None), "KMS"),
    ("aws-eks-control-plane-logs", eks(enabledClusterLogTypes=["api"]), "audit"),
    ("aws-eks-supported-version", eks(version="1.27"), "past EKS standard support"),
    ("aws-imdsv2", launch_template(metadataOptions={"httpTokens": "optional"}), "IMDSv2"),
    ("aws-imdsv2", launch_template(metadataOptions={"httpTokens": "required", "httpPutResponseHopLimit": 2}), "hop limit"),
    ("aws-encrypted-volumes", launch_template(blockDeviceMappings=[{"deviceName": "/dev/xvda", "ebs": {"encrypted": False}}]), "not encrypted"),
    ("aws-no-public-ips", launch_template(networkInterfaces=[{"associatePublicIpAddress": True}]), "public IPs"),
    ("aws-no-world-ingress", ResourceView("aws:ec2/securityGroup:SecurityGroup", "sg", {"ingress": [
        {"fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]}]}), "open to the world"),
    ("aws-no-world-ingress", ResourceView("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "r",
                                          {"cidrIpv4": "0.0.0.0/0"}), "open to the world"),
    ("aws-no-secrets-in-user-data", launch_template(userData=base64.b64encode(
        b"#!/bin/sh\nexport AWS_KEY=AKIAABCDEFGHIJKLMNOP\n").decode()), "secret"),
]


@pytest.mark.parametrize("rule,resource,expect", AWS_BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(AWS_BAD)])
def test_broken_aws_resource_is_caught(rule, resource, expect):
    got = findings(rule, [resource])
    assert got and any(expect in f.message for f in got), [f.message for f in got]


def test_aws_cidr_restricted_public_endpoint_passes():
    r = eks(vpcConfig={"endpointPublicAccess": True, "publicAccessCidrs": ["203.0.113.0/24"]})
    assert findings("aws-eks-private-endpoint", [r]) == []


def _plan(latency, tier="pii", site="gpu"):
    pp = PipelinePlacement(name="p", engine="cpu", privacy_tier=tier, replicas={site: 1}, routing={"r": {site: 1.0}},
                           latency_ms={"r": {site: latency}}, slo_p99_ms=100, failover={"r": [site]},
                           cost_usd_per_hour=1, explanation=Explanation(summary="x"))
    return PlacementPlan(environment="t", status="optimal", cost_usd_per_hour=1, lp_bound_usd_per_hour=1,
                         dual_bound_usd_per_hour=1, gap_to_lp=0, solve_seconds=0, solver="x", sites=[],
                         pipelines=[pp], data=[])


def test_plan_rules():
    c = ctx()
    c.plan = _plan(150, tier="internal")
    got = findings("plan-latency-slo", [], c)
    assert got and "150 ms > SLO 100 ms" in got[0].message
    assert findings("plan-privacy", [], c) == []
    c.plan = _plan(50, tier="pii", site="gpu")
    assert findings("plan-latency-slo", [], c) == []
    got = findings("plan-privacy", [], c)
    assert got and "pii pipeline placed on gpu" in got[0].message
