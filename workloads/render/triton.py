"""Triton Inference Server through KServe: a ServingRuntime per namespace and one InferenceService per
pipeline (variant) per site. Pure: returns manifests.

KServe runs in Standard mode (clusters/operator_values.py): each InferenceService becomes a Deployment and a Service
`<name>-predictor`, scaled by a KEDA ScaledObject that KServe writes from `predictor.autoScaling`. Knative's
`scaleMetric: rps` means nothing there (KServe's HPA path knows only cpu and memory and quietly falls back to 80 %
CPU, as the real controller showed on the local stack), so the request rate per replica is a Prometheus query on
Triton's own request counters instead."""
from __future__ import annotations

from infra.spec import Environment, Pipeline, TritonEngine
from workloads import planning
from workloads.render import meta, pods
from workloads.render.context import SiteContext
from workloads.render.model_delivery import SERVICE_ACCOUNT
from workloads.render.model_pods import declared_tier_label, node_selector, placement_affinity, pod_tier, tolerations

RUNTIME = "triton"
HTTP_PORT = 8080
GRPC_PORT = 9000
METRICS_PORT = 8002
FORMATS = {"onnx": "1", "tensorrt": "8", "pytorch": "1", "tensorflow": "2", "python": "1"}
DEPLOYMENT_MODE = "Standard"
ANNOTATIONS = {"serving.kserve.io/deploymentMode": DEPLOYMENT_MODE, "serving.kserve.io/autoscalerClass": "keda"}
"""Explicit on every InferenceService: a cluster whose KServe defaults to Knative still runs it as plain Deployments."""


def runtime(ctx: SiteContext, namespace: str) -> dict:
    lbls = meta.labels("triton", "serving-runtime", instance=RUNTIME, version=meta.image_version(ctx.images.triton),
                       site=ctx.site)
    return {
        "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
        "metadata": meta.metadata(RUNTIME, namespace, lbls),
        "spec": {
            "annotations": {"prometheus.kserve.io/port": str(METRICS_PORT), "prometheus.kserve.io/path": "/metrics"},
            "supportedModelFormats": [{"name": f, "version": v, "autoSelect": True, "priority": 1}
                                      for f, v in FORMATS.items()],
            "protocolVersions": ["v2", "grpc-v2"],
            "containers": [{
                "name": "kserve-container",
                "image": ctx.images.triton,
                "args": ["tritonserver", "--model-store=/mnt/models", f"--grpc-port={GRPC_PORT}",
                         f"--http-port={HTTP_PORT}", "--allow-grpc=true", "--allow-http=true",
                         f"--metrics-port={METRICS_PORT}", "--log-verbose=0",
                         # p99 for the SLO rules (workloads/render/slo.py): Triton's own latency quantiles per model
                         "--metrics-config=summary_latencies=true"],
                "ports": [{"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"}],
                "resources": pods.resources(1, 2),
                "securityContext": pods.container_security_context(),
                "readinessProbe": pods.http_probe("/v2/health/ready", HTTP_PORT, period=5),
                "livenessProbe": pods.http_probe("/v2/health/live", HTTP_PORT, period=15, failures=4),
            }],
        },
    }


def isvc_name(p: Pipeline, variant: str) -> str:
    return meta.k8s_name(p.name, variant, limit=45)  # KServe appends -predictor-... to derived objects


def predictor_name(isvc: str) -> str:
    """The Deployment and Service KServe makes of an InferenceService in Standard mode (and its pods' name prefix)."""
    return f"{isvc}-predictor"


def request_rate_query(isvc: str, namespace: str) -> str:
    """Requests per second served by an InferenceService's predictor pods, from Triton's counters (PodMonitor
    `triton`, which labels each series with its pod and namespace)."""
    return (f'sum(rate({{__name__=~"nv_inference_request_(success|failure)",namespace="{namespace}",'
            f'pod=~"{predictor_name(isvc)}-.+"}}[2m])) or vector(0)')


def autoscaling(ctx: SiteContext, isvc: str, namespace: str, rps_per_replica: float) -> dict:
    """KServe's KEDA autoscaling: one Prometheus trigger, averaged per replica (KEDA's default for it)."""
    return {"metrics": [{"type": "External", "external": {
        "metric": {"backend": "prometheus", "serverAddress": ctx.prometheus_url,
                   "query": request_rate_query(isvc, namespace)},
        "target": {"type": "Value", "value": str(max(1, int(rps_per_replica)))}}}]}


def inference_services(ctx: SiteContext, env: Environment, p: Pipeline, replicas: int, namespace: str) -> list[dict]:
    e: TritonEngine = p.engine  # type: ignore[assignment]
    out = []
    models = {v.name: v.model for v in p.variants}
    for variant, n in planning.variant_replicas(p, replicas).items():
        name = isvc_name(p, variant)
        s = planning.scaling(p, n)
        lbls = meta.labels("triton", "model-server", instance=name, version=meta.image_version(ctx.images.triton),
                           site=ctx.site, pipeline=p.name, tier=pod_tier(env, p)) | declared_tier_label(env, p)
        if variant:
            lbls[meta.VARIANT] = variant
        gpus = p.gpu.count if p.gpu else 0
        predictor: dict = {
            "minReplicas": s.min_replicas,
            "maxReplicas": s.max_replicas,
            "autoScaling": autoscaling(ctx, name, namespace, s.rps_threshold),
            # the namespace's model-server identity: KServe's storage initializer reads the s3:// model with it
            "serviceAccountName": SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "securityContext": pods.pod_security_context(),
            "model": {
                "modelFormat": {"name": e.model_format},
                "runtime": RUNTIME,
                "storageUri": models.get(variant, p.model),
                "args": [f"--backend-config=default-max-batch-size={e.max_batch_size}"],
                "resources": pods.resources(p.resources.cpu, p.resources.memory_gib, gpus),
                "securityContext": pods.container_security_context(),
                "readinessProbe": pods.http_probe("/v2/health/ready", HTTP_PORT, period=5),
                "livenessProbe": pods.http_probe("/v2/health/live", HTTP_PORT, period=15, failures=4),
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}],
            },
            "volumes": [pods.empty_dir("tmp", size_limit="4Gi"), pods.empty_dir("dshm", memory=True, size_limit="1Gi")],
            "affinity": placement_affinity(pod_tier(env, p), ctx.privacy_zones),
            "tolerations": tolerations(pod_tier(env, p), bool(gpus), ctx.privacy_zones),
        }
        if node_selector(p):
            predictor["nodeSelector"] = node_selector(p)
        if e.canary_traffic_percent is not None:
            predictor["canaryTrafficPercent"] = e.canary_traffic_percent
        out.append({
            "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": meta.metadata(name, namespace, lbls, {meta.MODEL: models.get(variant, p.model)} | ANNOTATIONS),
            "spec": {"predictor": predictor},
        })
    return out
