"""End to end: the real KServe controller manager (v0.17.0, built from its Go module by scripts/toolchain.sh) reconciles
the Triton pipelines the program renders for the local environment, on the local control plane of the site that holds
them (aws-use1; kwok nodes), in Standard mode with its webhooks registered by URL on loopback (hybridml/local/kserve.py).

- Every InferenceService is defaulted by the real mutating webhook, admitted by the real validating webhook, reconciled
  into its `<name>-predictor` Deployment, Service and KEDA ScaledObject, its pods get KServe's storage initializer
  (the pod webhook) and pass the namespace's Pod Security `restricted`, kwok runs them on the L4 nodes, and every
  InferenceService reports Ready=True within READY_WITHIN seconds.
- What must be refused is refused, with the component's own reason: the validating webhook refuses Knative's
  `scaleMetric: rps` on a KEDA-scaled InferenceService (what the program wrote before it was fixed); the ServingRuntime
  webhook refuses a second runtime claiming the same model formats at the same priority; the controller refuses
  Knative mode, which this cluster (like the fleet's) cannot serve.

kwok runs no container: no Triton loads a model and no storage initializer downloads one (README "KServe on the local
stack"). Needs the Go-built toolchain; outside CI the test is skipped (reason printed) when it is missing, with CI=true
it fails.
"""
from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import pytest

from clusters.baseline import namespaces as baseline_namespaces
from clusters.sizing import site_tiers
from hybridml.local import DEFAULT_CRD_DIR, api_client, down, kserve, up
from hybridml.local.fromspec import cluster_name, clusters_from_spec
from hybridml.local.kubeapi import KubeAPIError
from hybridml.local.toolchain import find_binaries, kwok_stage_files
from infra import labels as L
from infra.errors import ToolchainMissing
from tests.conftest import require
from tests.e2e.kube import wait_for
from tests.workloads.conftest import rendered
from workloads.render import triton

pytestmark = pytest.mark.e2e

CRD_DIR = Path(os.environ.get("HYBRIDML_CRD_DIR", DEFAULT_CRD_DIR))
SITE = "aws-use1"
# the kinds the manager watches, and KEDA's ScaledObject (Standard mode scales through KEDA; keda-sim runs its HPAs)
CRD_FILES = [f"kserve.{crd.split('.')[0]}.yaml" for crd in kserve.SERVED_CRDS] + ["keda.scaledobjects.yaml"]
READY_WITHIN = 180.0   # measured 25-45 s on a busy 2-core machine
ISVCS = "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices"
PATHS = {"ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
         "ServingRuntime": "/apis/serving.kserve.io/v1alpha1/namespaces/{ns}/servingruntimes",
         "InferenceService": ISVCS}


def _toolchain() -> None:
    try:
        find_binaries()
        kwok_stage_files()
        kserve.release_dir()
        ok, why = True, ""
    except ToolchainMissing as exc:
        ok, why = False, f"the local toolchain is missing: {exc}"
    require(ok, why)
    require(all((CRD_DIR / f).is_file() for f in CRD_FILES), f"KServe/KEDA CRDs missing under {CRD_DIR}")


def _ready(isvc: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (isvc.get("status") or {}).get("conditions", []))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    _toolchain()
    stack = rendered("local")                 # the program's objects, as `pulumi up --stack local` applies them
    env, plan = stack.env, stack.plan
    objects = [o for o in stack.objects if o.site == SITE and (
        o.kind in ("ServingRuntime", "InferenceService")
        or (o.kind == "ServiceAccount" and o.obj_name == "model-server"))]   # the predictors' identity
    objects.sort(key=lambda o: list(PATHS).index(o.kind))
    assert [o.kind for o in objects].count("InferenceService") >= 2, [o.ref() for o in objects]
    state = tmp_path_factory.mktemp("kserve")
    started = time.monotonic()
    try:
        up(clusters_from_spec(env, plan, [SITE]), state, CRD_DIR, crd_patterns=CRD_FILES)
        api = api_client(cluster_name(SITE), state)
        for ns in baseline_namespaces(SITE, site_tiers(env.site(SITE)), gpu_operator=False):   # PSS `restricted`
            api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": ns.name, "labels": ns.labels}})
        t0 = time.monotonic()
        for o in objects:   # a refusal by a webhook fails here, with its reason
            api.post(PATHS[o.kind].format(ns=o.namespace), o.manifest)
        yield api, [o.manifest for o in objects if o.kind == "InferenceService"], t0
    finally:
        print(f"kserve e2e: {time.monotonic() - started:.1f} s")
        down(state)


def test_every_inference_service_is_reconciled_into_ready_predictors(cluster):
    api, isvcs, t0 = cluster
    ns = isvcs[0]["metadata"]["namespace"]
    names = [m["metadata"]["name"] for m in isvcs]

    def all_ready() -> list[dict] | None:
        items = [api.get(f"{ISVCS.format(ns=ns)}/{n}") for n in names]
        return items if all(_ready(i) for i in items) else None

    live = wait_for(f"InferenceServices {names} Ready", all_ready, timeout=READY_WITHIN, interval=1.0)
    print(f"{len(names)} InferenceServices created -> Ready: {time.monotonic() - t0:.1f} s")
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"] for n in api.get("/api/v1/nodes")["items"]}
    for isvc, rendered_isvc in zip(live, isvcs, strict=True):
        name, predictor = isvc["metadata"]["name"], triton.predictor_name(isvc["metadata"]["name"])
        assert isvc["status"]["deploymentMode"] == "Standard"
        assert isvc["status"]["address"]["url"] == f"http://{predictor}.{ns}.svc.cluster.local"
        # the defaulting webhook's mark: the model format it read, as an annotation
        assert isvc["metadata"]["annotations"]["modelFormat"] == rendered_isvc["spec"]["predictor"]["model"]["modelFormat"]["name"]
        deployment = api.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{predictor}")
        assert [(r["kind"], r["name"]) for r in deployment["metadata"]["ownerReferences"]] == [("InferenceService", name)]
        service = api.get(f"/api/v1/namespaces/{ns}/services/{predictor}")
        assert [p["port"] for p in service["spec"]["ports"]] == [80]
        # scaled as the program asked: KEDA on Triton's request rate, at the plan's requests per replica
        scaled = api.get(f"/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects/{predictor}")
        (trigger,) = scaled["spec"]["triggers"]
        (metric,) = rendered_isvc["spec"]["predictor"]["autoScaling"]["metrics"]
        assert trigger["type"] == "prometheus" and trigger["metadata"]["query"] == metric["external"]["metric"]["query"]
        assert trigger["metadata"]["threshold"] == metric["external"]["target"]["value"]
        assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (
            rendered_isvc["spec"]["predictor"]["minReplicas"], rendered_isvc["spec"]["predictor"]["maxReplicas"])
        pods = api.get(f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": f"{L.KSERVE_ISVC}={name}"})["items"]
        assert pods and all(p["status"]["phase"] == "Running" for p in pods), [p["status"] for p in pods]
        for pod in pods:
            # the pod webhook's work: KServe's storage initializer fetches the model, under the chart's restricted
            # securityContext (without it the namespace's Pod Security `restricted` refuses the pod)
            (init,) = pod["spec"]["initContainers"]
            assert init["name"] == "storage-initializer"
            assert init["args"] == [rendered_isvc["spec"]["predictor"]["model"]["storageUri"], "/mnt/models"]
            assert init["securityContext"]["allowPrivilegeEscalation"] is False
            assert nodes[pod["spec"]["nodeName"]][L.GPU_PRODUCT] == L.gpu_product("L4")
    # KServe made no ingress of its own: the fleet's edge is Envoy Gateway
    assert api.get(f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses")["items"] == []


def _refusal(api, path: str, obj: dict) -> str:
    with pytest.raises(KubeAPIError) as refused:
        api.post(path, obj)
    assert refused.value.status in (400, 403, 422), refused.value
    return json.loads(refused.value.body)["message"]


def test_the_webhooks_and_the_controller_refuse_what_they_must(cluster):
    api, isvcs, _ = cluster
    ns = isvcs[0]["metadata"]["namespace"]
    # Knative's rps metric on a KEDA-scaled InferenceService: what the program wrote before (README)
    rps = copy.deepcopy(isvcs[0])
    rps["metadata"]["name"] = "broken-rps"
    rps["spec"]["predictor"] |= {"scaleMetric": "rps", "scaleTarget": 280}
    message = _refusal(api, ISVCS.format(ns=ns), rps)
    assert message == ('admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request: '
                       "ScaleMetric is not supported for KEDA"), message
    # a second runtime auto-selected for the same formats at the same priority: KServe could not choose
    runtime = api.get(f"{PATHS['ServingRuntime'].format(ns=ns)}/{triton.RUNTIME}")
    twin = {"apiVersion": runtime["apiVersion"], "kind": runtime["kind"],
            "metadata": {"name": "triton-twin", "namespace": ns}, "spec": runtime["spec"]}
    message = _refusal(api, PATHS["ServingRuntime"].format(ns=ns), twin)
    assert "servingruntime.kserve-webhook-server.validator" in message and "same priority assigned" in message, message
    # Knative mode passes the webhooks; the controller refuses it (no Knative Serving here), and makes nothing
    knative = copy.deepcopy(isvcs[0])
    knative["metadata"]["name"] = "broken-knative"
    knative["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Knative"
    api.post(ISVCS.format(ns=ns), knative)
    events = wait_for("the controller's refusal", lambda: api.get(f"/api/v1/namespaces/{ns}/events", params={
        "fieldSelector": "involvedObject.name=broken-knative,reason=ServerlessModeRejected"})["items"], timeout=60)
    assert "Knative Services are not available" in events[0]["message"], events
    assert not _ready(api.get(f"{ISVCS.format(ns=ns)}/broken-knative"))
    assert api.get_or_none(f"/apis/apps/v1/namespaces/{ns}/deployments/broken-knative-predictor") is None
