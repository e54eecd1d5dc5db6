"""vLLM model servers: one Deployment (or LeaderWorkerSet when a replica spans nodes) per A/B variant,
with Service, PodDisruptionBudget and KEDA ScaledObject. Pure: returns manifests."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from infra.spec import Environment, Pipeline, VllmEngine
from workloads import planning
from workloads.render import meta, pods
from workloads.render import model_delivery as md
from workloads.render.context import SiteContext
from workloads.render.model_pods import declared_tier_label, node_selector, placement_affinity, pod_tier, spread, tolerations

PORT = 8000
CONFIG_MOUNT = "/etc/vllm/secret"
MODELS_MOUNT = md.CACHE_MOUNT
"""The namespace's shared model cache (workloads/render/model_delivery.py), read-only to the server."""
HF_TOKEN_SECRET = "hf-token"
"""Optional Secret (key `token`) with a Hugging Face token for gated models; created by the operator. Only the
cache fill reads it: the server loads local files."""
LWS_MULTINODE_SCRIPT = "/vllm-workspace/examples/online_serving/multi-node-serving.sh"


@dataclass(frozen=True)
class VllmVariant:
    name: str            # object name (Deployment/Service): pipeline[-variant]
    variant: str         # "" without A/B variants
    model: str
    replicas: int
    group_size: int      # nodes per replica (>1: LeaderWorkerSet)


def variants(env: Environment, site: str, p: Pipeline, replicas: int) -> list[VllmVariant]:
    split = planning.variant_replicas(p, replicas)
    models = {v.name: v.model for v in p.variants}
    group = planning.replica_group_size(env, site, p)
    return [VllmVariant(meta.k8s_name(p.name, v), v, models.get(v, p.model), n, group)
            for v, n in split.items()]


def config_secret_name(p: Pipeline) -> str:
    return meta.k8s_name(p.name, "vllm-config")


def api_key_config(key: str) -> str:
    """The vLLM `--config` file that carries the API key (a file, never an env var or plain argument)."""
    return f"api-key: {json.dumps(key)}\n"


def serve_args(p: Pipeline, model: str, *, ray: bool = False) -> list[str]:
    e: VllmEngine = p.engine  # type: ignore[assignment]
    args = [md.cache_path(model),
            "--served-model-name", planning.served_model_name(p),
            "--host", "0.0.0.0", "--port", str(PORT),
            "--tensor-parallel-size", str(e.tensor_parallel),
            "--pipeline-parallel-size", str(e.pipeline_parallel),
            "--max-model-len", str(e.max_model_len),
            "--gpu-memory-utilization", str(e.gpu_memory_utilization),
            "--config", f"{CONFIG_MOUNT}/config.yaml"]
    spec = planning.speculative_config(p)
    if spec and "model" in spec:
        spec["model"] = md.cache_path(spec["model"])   # the draft model is in the cache too
    if spec:
        args += ["--speculative-config", json.dumps(spec, sort_keys=True)]
    if ray:
        args += ["--distributed-executor-backend", "ray"]
    return args


def _env() -> list[dict]:
    # Every cache vLLM, torch, triton kernels and HF write goes to /tmp: the root filesystem and the model cache
    # stay read-only. The weights are local directories: the hub is never asked.
    return [
        {"name": "HOME", "value": "/tmp/home"},
        {"name": "HF_HOME", "value": "/tmp/hf"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        {"name": "VLLM_CACHE_ROOT", "value": "/tmp/vllm"},
        {"name": "XDG_CACHE_HOME", "value": "/tmp/cache"},
        {"name": "TRITON_CACHE_DIR", "value": "/tmp/triton"},
        {"name": "NUMBA_CACHE_DIR", "value": "/tmp/numba"},
        {"name": "OUTLINES_CACHE_DIR", "value": "/tmp/outlines"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
    ]


def _volumes(p: Pipeline, shm_gib: int) -> list[dict]:
    return [
        pods.empty_dir("dshm", memory=True, size_limit=f"{shm_gib}Gi"),
        pods.empty_dir("tmp", size_limit="20Gi"),
        md.cache_volume(),   # the namespace's shared model cache (filled by the init container, once per site)
        {"name": "config", "secret": {"secretName": config_secret_name(p), "defaultMode": 0o440}},
        {"name": "hf-token", "projected": {"defaultMode": 0o440, "sources": [
            {"secret": {"name": HF_TOKEN_SECRET, "optional": True, "items": [{"key": "token", "path": "token"}]}}]}},
    ]


_MOUNTS: list[dict[str, Any]] = [
    {"name": "dshm", "mountPath": "/dev/shm"},
    {"name": "tmp", "mountPath": "/tmp"},
    {"name": md.CACHE_VOLUME, "mountPath": MODELS_MOUNT, "readOnly": True},
    {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
]


def _pod_spec(ctx: SiteContext, env: Environment, p: Pipeline, v: VllmVariant, lbls: dict, *,
              role: str = "server") -> dict:
    gpus = p.gpu.count // v.group_size if p.gpu else 0
    cpu = p.resources.cpu / v.group_size
    mem = p.resources.memory_gib / v.group_size
    shm = max(1, min(16, int(mem // 4)))
    res = pods.resources(cpu, mem, gpus)
    health = PORT
    if v.group_size == 1:
        c = pods.container(
            "vllm", ctx.images.vllm, command=["vllm", "serve"], args=serve_args(p, v.model),
            ports=[{"name": "http", "containerPort": PORT, "protocol": "TCP"}], env=_env(), res=res,
            startup=pods.http_probe("/health", health, period=10, failures=180),
            readiness=pods.http_probe("/health", health, period=5, failures=3),
            liveness=pods.http_probe("/health", health, period=15, failures=4), mounts=_MOUNTS)
    elif role == "leader":
        script = (f"{LWS_MULTINODE_SCRIPT} leader --ray_cluster_size=$(LWS_GROUP_SIZE) && exec vllm serve "
                  + " ".join(json.dumps(a) if " " in a or "{" in a else a for a in serve_args(p, v.model, ray=True)))
        c = pods.container(
            "vllm-leader", ctx.images.vllm, command=["/bin/bash", "-c"], args=[script],
            ports=[{"name": "http", "containerPort": PORT, "protocol": "TCP"}], env=_env(), res=res,
            startup=pods.http_probe("/health", health, period=10, failures=180),
            readiness=pods.http_probe("/health", health, period=5, failures=3),
            liveness=pods.http_probe("/health", health, period=15, failures=4), mounts=_MOUNTS)
    else:
        c = pods.container(
            "vllm-worker", ctx.images.vllm, command=["/bin/bash", "-c"],
            args=[f"exec {LWS_MULTINODE_SCRIPT} worker --ray_address=$(LWS_LEADER_ADDRESS)"],
            env=_env(), res=res, readiness=pods.exec_probe(["ray", "health-check"], period=10),
            liveness=pods.exec_probe(["ray", "health-check"], period=20, failures=6), mounts=_MOUNTS)
    spec = pods.pod_spec(
        [c], volumes=_volumes(p, shm), node_selector=node_selector(p),
        init_containers=[md.fill_container(ctx.images.vllm, md.pod_models(p, v.model), cpu, mem)],
        affinity=placement_affinity(pod_tier(env, p), ctx.privacy_zones),
        tolerations=tolerations(pod_tier(env, p), bool(gpus), ctx.privacy_zones),
        spread=spread(ctx.site_kind, meta.selector(lbls), p.spread.zone_max_skew, hard=False),
        termination_grace=120)
    spec["serviceAccountName"] = md.SERVICE_ACCOUNT   # its S3 identity on cloud sites; no API token mounted
    return spec


def pod_labels(ctx: SiteContext, env: Environment, p: Pipeline, v: VllmVariant) -> dict:
    return meta.labels("vllm", "model-server", instance=v.name, version=meta.image_version(ctx.images.vllm),
                       site=ctx.site, pipeline=p.name, tier=pod_tier(env, p)) | declared_tier_label(env, p)


def objects(ctx: SiteContext, env: Environment, p: Pipeline, replicas: int, namespace: str) -> list[dict]:
    """Workload, Service, PDB and ScaledObject per variant (the config Secret is built by the component)."""
    out: list[dict] = []
    split = variants(env, ctx.site, p, replicas)
    for v in split:
        lbls = pod_labels(ctx, env, p, v)
        sel = meta.selector(lbls)
        if v.variant:
            lbls = {**lbls, meta.VARIANT: v.variant}
        annotations = {meta.MODEL: v.model}
        if v.group_size == 1:
            workload = {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": meta.metadata(v.name, namespace, lbls, annotations),
                "spec": {
                    "replicas": v.replicas,
                    "revisionHistoryLimit": 3,
                    # No surge: a rolling update must not need GPUs the plan did not count.
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                    "selector": {"matchLabels": sel},
                    "template": {"metadata": {"labels": lbls, "annotations": annotations},
                                 "spec": _pod_spec(ctx, env, p, v, lbls)},
                },
            }
            target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": v.name}
            service_selector = sel
        else:
            leader_lbls = {**lbls, meta.LWS_ROLE: "leader"}
            worker_lbls = {**lbls, meta.LWS_ROLE: "worker"}
            workload = {
                "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
                "metadata": meta.metadata(v.name, namespace, lbls, annotations),
                "spec": {
                    "replicas": v.replicas,
                    "startupPolicy": "LeaderCreated",
                    "rolloutStrategy": {"type": "RollingUpdate",
                                        "rollingUpdateConfiguration": {"maxSurge": 0, "maxUnavailable": 1}},
                    "leaderWorkerTemplate": {
                        "size": v.group_size,
                        "restartPolicy": "RecreateGroupOnPodRestart",
                        "leaderTemplate": {"metadata": {"labels": leader_lbls, "annotations": annotations},
                                           "spec": _pod_spec(ctx, env, p, v, lbls, role="leader")},
                        "workerTemplate": {"metadata": {"labels": worker_lbls, "annotations": annotations},
                                           "spec": _pod_spec(ctx, env, p, v, lbls, role="worker")},
                    },
                },
            }
            target = {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": v.name}
            service_selector = {**sel, meta.LWS_ROLE: "leader"}
        out.append(workload)
        out.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta.metadata(v.name, namespace, lbls),
            "spec": {"type": "ClusterIP", "selector": service_selector,
                     "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP",
                                "appProtocol": "http"}]},
        })
        out.append({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta.metadata(v.name, namespace, lbls),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": sel},
                     "unhealthyPodEvictionPolicy": "AlwaysAllow"},
        })
        out.append(scaled_object(ctx, p, v, namespace, lbls, target))
    return out


def scaled_object(ctx: SiteContext, p: Pipeline, v: VllmVariant, namespace: str, lbls: dict, target: dict) -> dict:
    s = planning.scaling(p, v.replicas)
    waiting = (f'sum(vllm:num_requests_waiting{{namespace="{namespace}",service="{v.name}"}})'
               f' or vector(0)')
    triggers = [{"type": "prometheus", "name": "queue",
                 "metadata": {"serverAddress": ctx.prometheus_url, "query": waiting,
                              "threshold": str(s.queue_threshold)}}]
    if s.scale_to_zero:
        # At zero replicas there is no vLLM to report a queue: wake up on requests the gateway sees.
        rate = (f'sum(rate(gen_ai_server_request_duration_seconds_count{{'
                f'gen_ai_request_model="{planning.served_model_name(p)}"}}[2m])) or vector(0)')
        triggers.append({"type": "prometheus", "name": "gateway-requests",
                         "metadata": {"serverAddress": ctx.prometheus_url, "query": rate,
                                      "threshold": str(max(1, s.rps_threshold)), "activationThreshold": "0"}})
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": meta.metadata(v.name, namespace, lbls),
        "spec": {
            "scaleTargetRef": target,
            "minReplicaCount": 0 if s.scale_to_zero else v.replicas,
            "maxReplicaCount": max(1, planning.scaling(p, v.replicas).max_replicas),
            "pollingInterval": 15,
            "cooldownPeriod": 900,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleDown": {"stabilizationWindowSeconds": 900, "policies": [
                    {"type": "Pods", "value": 1, "periodSeconds": 300}]}}}},
            "triggers": triggers,
        },
    }
