"""What the local stack gives the real KServe controller manager (hybridml/local/kserve.py), from the release's own
files, and what the program writes for it (workloads/render/triton.py): pure functions, no cluster (the controller
itself runs in tests/e2e/test_kserve.py)."""
from __future__ import annotations

import base64
import json

from hybridml.local import kserve
from tests.workloads.conftest import rendered
from workloads.render import triton

UPSTREAM_CONFIG = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "inferenceservice-config"}, "data": {
    "_example": "docs",
    "deploy": json.dumps({"defaultDeploymentMode": "Serverless"}),
    "ingress": json.dumps({"enableGatewayApi": True, "ingressGateway": "knative-serving/knative-ingress-gateway",
                           "disableIstioVirtualHost": False, "disableIngressCreation": False}),
    "storageInitializer": json.dumps({"image": "kserve/storage-initializer:latest", "cpuRequest": "100m"}),
}}
UPSTREAM_HOOKS = [
    {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
     "metadata": {"name": "inferenceservice.serving.kserve.io", "creationTimestamp": None},
     "webhooks": [{"name": "inferenceservice.kserve-webhook-server.pod-mutator", "failurePolicy": "Fail",
                   "clientConfig": {"service": {"name": "$(webhookServiceName)", "namespace": "$(kserveNamespace)",
                                                "path": "/mutate-pods"}},
                   "objectSelector": {"matchExpressions": [{"key": "serving.kserve.io/inferenceservice",
                                                            "operator": "Exists"}]}}]},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kserve-webhook-server-service"}},
]


def test_config_keeps_the_release_defaults_but_the_mode_and_the_ingress():
    cm = kserve.config_map(UPSTREAM_CONFIG)
    assert cm["metadata"] == {"name": "inferenceservice-config", "namespace": "kserve"}
    assert json.loads(cm["data"]["deploy"]) == {"defaultDeploymentMode": "Standard"}
    ingress = json.loads(cm["data"]["ingress"])
    assert ingress == {"ingressGateway": "knative-serving/knative-ingress-gateway", "enableGatewayApi": False,
                       "disableIstioVirtualHost": True, "disableIngressCreation": True}
    assert cm["data"]["storageInitializer"] == UPSTREAM_CONFIG["data"]["storageInitializer"]
    assert "_example" not in cm["data"]


def test_images_take_the_release_tag():
    text = "image: kserve/agent:latest\nimage: default-storage-initilizer:replace\nimage: other/thing:latest\n"
    assert kserve.pin_images(text, "v0.17.0") == (
        "image: kserve/agent:v0.17.0\nimage: kserve/storage-initializer:v0.17.0\nimage: other/thing:latest\n")


def test_webhooks_point_at_loopback_by_url_and_trust_the_cluster_ca():
    (hooks,) = kserve.webhook_configurations(UPSTREAM_HOOKS, 43210, b"-----CA-----")
    assert hooks["metadata"] == {"name": "inferenceservice.serving.kserve.io"}
    (hook,) = hooks["webhooks"]
    assert hook["clientConfig"] == {"url": "https://127.0.0.1:43210/mutate-pods",
                                    "caBundle": base64.b64encode(b"-----CA-----").decode()}
    # everything else is upstream's: the selector that keeps the pod webhook off every other pod
    assert hook["objectSelector"] == UPSTREAM_HOOKS[0]["webhooks"][0]["objectSelector"]
    assert hook["failurePolicy"] == "Fail"


def test_storage_container_gets_the_charts_restricted_security_context():
    upstream = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterStorageContainer", "metadata": {"name": "default"},
                "spec": {"container": {"name": "storage-initializer", "image": "kserve/storage-initializer:v0.17.0"},
                         "supportedUriFormats": [{"prefix": "s3://"}], "workloadType": "initContainer"}}
    values = {"kserve": {"storage": {"resources": {"requests": {"cpu": "100m"}},
                                     "containerSecurityContext": {"allowPrivilegeEscalation": False,
                                                                  "capabilities": {"drop": ["ALL"]}}}}}
    sc = kserve.storage_container(upstream, values)
    assert sc["spec"]["container"] == {"name": "storage-initializer", "image": "kserve/storage-initializer:v0.17.0",
                                       "resources": {"requests": {"cpu": "100m"}},
                                       "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
    assert sc["spec"]["supportedUriFormats"] == [{"prefix": "s3://"}]
    assert "securityContext" not in upstream["spec"]["container"]    # the release's object is left as it was


def test_the_programs_inference_services_are_written_for_standard_mode():
    stack = rendered("local")
    isvcs = [o for o in stack.objects if o.kind == "InferenceService"]
    assert isvcs
    for o in isvcs:
        m = o.manifest
        assert m["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == kserve.DEPLOYMENT_MODE
        assert m["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
        predictor = m["spec"]["predictor"]
        assert "scaleMetric" not in predictor and "scaleTarget" not in predictor    # Knative KPA's, ignored here
        (metric,) = predictor["autoScaling"]["metrics"]
        query = metric["external"]["metric"]["query"]
        assert f'pod=~"{triton.predictor_name(o.obj_name)}-.+"' in query and f'namespace="{o.namespace}"' in query
        pipeline = next(p for p in stack.env.pipelines if p.name == m["metadata"]["labels"]["hybridml.io/pipeline"])
        assert metric["external"]["target"] == {"type": "Value",
                                                "value": str(int(pipeline.capacity_rps * pipeline.target_utilization))}
