"""Resource fixtures for rule tests: one compliant object of each kind, and ways to break it."""
from __future__ import annotations

import copy

from policies.rules import Context, ResourceView, SiteFacts

GOOD_CONTAINER = {
    "name": "server",
    "image": "vllm/vllm-openai:v0.11.0",
    "resources": {"requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                  "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}},
    "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}},
    "livenessProbe": {"httpGet": {"path": "/health", "port": 8000}},
    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True, "runAsNonRoot": True},
    "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
}
GOOD_POD_SPEC = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [GOOD_CONTAINER],
    "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}, {"name": "cache", "persistentVolumeClaim": {"claimName": "c"}}],
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
}
LABELS = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "chat", "app.kubernetes.io/component": "model",
          "app.kubernetes.io/part-of": "hybridml", "app.kubernetes.io/managed-by": "pulumi",
          "hybridml.io/privacy-tier": "internal"}


def deployment(cluster: str = "gpu", namespace: str = "ml-internal", **changes) -> ResourceView:
    props = {"metadata": {"name": "chat", "namespace": namespace, "labels": dict(LABELS)},
             "spec": {"replicas": 2, "template": {"metadata": {"labels": dict(LABELS)}, "spec": copy.deepcopy(GOOD_POD_SPEC)}}}
    return ResourceView("kubernetes:apps/v1:Deployment", "chat", props, cluster=cluster)


def edit(r: ResourceView, fn) -> ResourceView:
    props = copy.deepcopy(r.props)
    fn(props)
    return ResourceView(r.type, r.name, props, cluster=r.cluster)


def pod(props):  # the pod spec inside a Deployment
    return props["spec"]["template"]["spec"]


def c0(props):
    return pod(props)["containers"][0]


def ctx() -> Context:
    return Context(sites={
        "gpu": SiteFacts("gpu", "cloud", ("public", "internal"), ("L4",)),
        "dc": SiteFacts("dc", "datacenter", ("public", "internal", "pii"), ()),
    })


def netpol(namespace="ml-internal", cluster="gpu") -> ResourceView:
    return ResourceView("kubernetes:networking.k8s.io/v1:NetworkPolicy", "deny",
                        {"metadata": {"name": "default-deny", "namespace": namespace},
                         "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}, cluster=cluster)


def eks(**overrides) -> ResourceView:
    props = {"version": "1.33", "enabledClusterLogTypes": ["api", "audit", "authenticator", "controllerManager", "scheduler"],
             "vpcConfig": {"endpointPublicAccess": False, "endpointPrivateAccess": True, "subnetIds": ["s1"]},
             "encryptionConfig": {"resources": ["secrets"], "provider": {"keyArn": "arn:aws:kms:us-east-1:1:key/k"}}}
    props.update(overrides)
    return ResourceView("aws:eks/cluster:Cluster", "eks", props)


def launch_template(**overrides) -> ResourceView:
    props = {"metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 1},
             "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": True, "volumeSize": 100}}],
             "networkInterfaces": [{"associatePublicIpAddress": False}], "userData": ""}
    props.update(overrides)
    return ResourceView("aws:ec2/launchTemplate:LaunchTemplate", "lt", props)
